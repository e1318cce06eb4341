"""`python -m monitors …` — the command-line interface (see shared/cli.py)."""

import sys

from shared.cli import main

sys.exit(main())
