"""The CLI's command modules, one per area; `cli.py` registers each module's COMMANDS on the root group."""
