"""``python -m distil`` runs the command line."""

from distil.cli import main

main()
