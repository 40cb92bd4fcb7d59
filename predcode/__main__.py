"""``python -m predcode`` runs the command line."""

import sys

from .app.cli import main

if __name__ == "__main__":  # not when a spawned worker process re-imports the main module
    sys.exit(main())
