"""Command groups of the `evoforge` CLI beyond the run commands in cli.py; each module has `register(app)`."""
