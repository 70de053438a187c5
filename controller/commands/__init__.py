"""The `mtr` subcommands' handlers (registered as `mtr.commands` entry points in pyproject.toml).

Each is thin: read its inputs and check them before anything starts, build what the stage needs, run the
stage, print where the results are. They may import everything else in `controller`; nothing imports them.
"""
