"""One module per CLI subcommand. Each exposes `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.

`dsunlearn.cli` registers every module listed in `COMMANDS`; adding a command is one file and one line.
"""

COMMANDS = ["finetune", "unlearn", "eval", "geffect", "extrapolate", "attack", "demo", "configs"]
