"""``python -m rankmixer`` runs the CLI."""

from rankmixer.cli import app

app()
