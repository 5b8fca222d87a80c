"""`python -m copra` runs the command-line interface."""

from copra.cli import main

raise SystemExit(main())
