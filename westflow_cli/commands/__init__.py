"""Subcommands of the ``westflow`` CLI, one module each."""
