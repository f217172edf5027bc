"""The `dsunlearn` command line: finetune | unlearn | eval | geffect | extrapolate | demo | configs.

Run on one process (`dsunlearn finetune ...`), or on several with a launcher:
`deepspeed --num_accelerators 2 --module dsunlearn finetune ...` (CPU), `deepspeed --num_gpus 8 --module
dsunlearn ...`, `torchrun --nproc_per_node 2 -m dsunlearn ...`. Each subcommand is a module of
`dsunlearn.commands`.

User errors (bad config, data, paths, conflicting output dirs) print one line and exit 2; `--debug` shows the
traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from dsunlearn import __version__
from dsunlearn.commands import COMMANDS
from dsunlearn.errors import DsUnlearnError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsunlearn", description="Distributed LLM unlearning on DeepSpeed (objectives, GRU, G-effect, UIPE, TOFU)."
    )
    parser.add_argument("--version", action="version", version=f"dsunlearn {__version__}")
    # `deepspeed --module dsunlearn ...` inserts --local_rank=N before the subcommand (LOCAL_RANK is also set).
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    # The deepspeed launcher appends --local_rank=N; LOCAL_RANK is in the environment as well.
    common.add_argument("--local_rank", "--local-rank", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = importlib.import_module(f"dsunlearn.commands.{name}")
        p = sub.add_parser(mod.NAME, parents=[common], help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `dsunlearn unlearn --resume engine.lr=1e-3`: key=value items after a flag are overrides too.
    if extra:
        if hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args._run(args)
    except DsUnlearnError as e:
        if args.debug:
            raise
        rank = os.environ.get("RANK", "0")
        prefix = "" if rank == "0" else f"[rank {rank}] "
        print(f"{prefix}dsunlearn {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        return 0
    except Exception as e:
        msg = storage_message(e)
        if msg is None or args.debug:
            raise
        rank = os.environ.get("RANK", "0")
        prefix = "" if rank == "0" else f"[rank {rank}] "
        print(f"{prefix}dsunlearn {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _shutdown_process_group()


# The storage said no: nothing the code can fix, one line for the user. Writers are atomic (fsutil.py): what
# was published before stays whole, the half-written temporary file is never published.
STORAGE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.EFBIG: "file size limit exceeded", errno.EROFS: "read-only file system"}  # fmt: skip


def storage_message(e: BaseException) -> str | None:
    """The one-line message for a write the storage refused (OSError, or the same wrapped by safetensors'
    Rust writer as "os error N", or torch.save's "PytorchStreamWriter failed writing"), else None."""
    import re

    code, where = None, ""
    if isinstance(e, OSError):
        code, where = e.errno, f" while writing '{e.filename}'" if e.filename else ""
    elif (m := re.search(r"os error (\d+)", str(e))) is not None:
        code = int(m.group(1))
    elif "PytorchStreamWriter failed writing" in str(e):
        code = errno.ENOSPC  # torch reports no errno; a full or failing disk is what it means in practice
    if code not in STORAGE_ERRORS:
        return None
    return (
        f"{STORAGE_ERRORS[code]}{where}; files already published are intact (writes are atomic): free space or "
        "choose another output location, then rerun (or --resume from the last checkpoint)"
    )


def _shutdown_process_group() -> None:
    """Tear the process group down on the way out (NCCL warns, and may hang at exit, otherwise)."""
    from dsunlearn.dist import active_group

    tdist = active_group()  # None without torch imported: a refused command never pays for it here
    if tdist is not None:
        try:
            tdist.destroy_process_group()
        except Exception:  # exiting anyway; never mask the real outcome
            pass


if __name__ == "__main__":
    sys.exit(main())
