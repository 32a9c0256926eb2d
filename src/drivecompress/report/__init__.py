"""Self-contained HTML report with embedded plots."""
