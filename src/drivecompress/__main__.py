"""``python -m drivecompress`` runs the CLI (same as the ``drivecompress`` console script)."""

import sys

from drivecompress.cli import main

sys.exit(main())
