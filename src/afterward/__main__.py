"""``python -m afterward`` runs the CLI."""

import sys

from afterward.cli import main

sys.exit(main())
