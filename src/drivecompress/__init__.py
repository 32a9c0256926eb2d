"""drivecompress: make driving perception models small and fast, and prove it on the real runtime."""

__version__ = "0.1.0"
