"""Reading DeepSpeed checkpoints without running code from them: `torch.load(weights_only=True)` only.

DeepSpeed 0.19's `TorchCheckpointEngine.load` calls `torch.load(..., weights_only=False)`: a pickle planted in
`mp_rank_00_model_states.pt` or `*_optim_states.pt` of a run directory someone hands you would execute on
``--resume``. Every file DeepSpeed reads while loading a checkpoint goes through `engine.checkpoint_engine.load`
(module states, ZeRO optimizer partitions; verified on 0.19.8 for stages 0-3, fp32/bf16, offload), so
`install_safe_loader` swaps that one object for `SafeCheckpointEngine`, whose `load` uses the restricted
unpickler (tensors, containers, numbers, strings) plus the few plain-data DeepSpeed classes its own state holds
(found with `torch.serialization.get_unsafe_globals_in_checkpoint` on checkpoints of every stage):

- `ZeroStageEnum`, `OffloadDeviceEnum` (int/str enums), `fragment_address` (a dataclass of two ints),
- `LossScaler`, `DynamicLossScaler` (attribute bags; the unpickler sets their `__dict__`, no method runs).

Anything else (a `posix.system` REDUCE, an unknown class) makes torch refuse the file; that becomes a one-line
RunError naming the file. Saving is unchanged (DeepSpeed's own `save`).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

from dsunlearn.errors import RunError


def _safe_globals() -> list:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.runtime.zero.offload_config import OffloadDeviceEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, OffloadDeviceEnum, fragment_address, LossScaler, DynamicLossScaler]


def safe_torch_load(path, map_location=None):
    """`torch.load` with the restricted unpickler; RunError (one line, the file named) if it refuses."""
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        why = str(e).split("\n")[0].strip()[:200]
        raise RunError(
            f"refusing to load '{path}': it holds objects that plain tensor data does not ({why}); it may have "
            "been planted to run code, or written by another tool. dsunlearn never unpickles code: use a "
            "checkpoint written by dsunlearn, or start the run again"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise RunError(
            f"cannot read checkpoint file '{path}' ({type(e).__name__}); it is damaged or truncated: resume from "
            "another checkpoint or start the run again"
        ) from None


def _file_problem(path: Path) -> str | None:
    """Why `path` must not be loaded (one line), or None. Reads only its pickle opcodes, not the tensor data."""
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:  # not a torch zip file, truncated, garbage: all the same to the user
        return (
            f"cannot read checkpoint file '{path}' ({type(e).__name__}): it is not a torch checkpoint or it is "
            "damaged; resume from another checkpoint or start the run again"
        )
    if unsafe:
        shown = ", ".join(sorted(unsafe)[:3])[:200]
        return (
            f"refusing to load '{path}': it asks to unpickle {shown}, which a DeepSpeed checkpoint never holds; it "
            "may have been planted to run code. dsunlearn never unpickles code: use a checkpoint written by "
            "dsunlearn, or start the run again"
        )
    return None


def precheck_checkpoint(tag_dir: Path) -> None:
    """Collective: every `*.pt` file of a checkpoint is checked (each rank a share) before DeepSpeed opens any,
    so that a bad file found by one rank stops all of them at once instead of leaving the others in a collective."""
    from dsunlearn import dist

    names = sorted(p.name for p in Path(tag_dir).glob("*.pt"))
    mine = names[dist.rank() :: dist.world_size()]
    problem = next((m for n in mine if (m := _file_problem(Path(tag_dir) / n))), None)
    problem = next((m for m in dist.all_gather_object(problem) if m), None)
    if problem:
        raise RunError(problem)


class SafeCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine with a loader that cannot execute code."""

    def load(self, path: str, map_location=None):
        return safe_torch_load(path, map_location=map_location)


def install_safe_loader(engine) -> None:
    """Make every checkpoint read of this DeepSpeed engine go through `safe_torch_load`.

    Only DeepSpeed's default (torch) checkpoint engine is replaced; another one (Nebula, decoupled, fast) is
    refused, because its loader is not known to be safe.
    """
    current = engine.checkpoint_engine
    if isinstance(current, SafeCheckpointEngine):
        return
    if type(current) is not TorchCheckpointEngine:
        raise RunError(
            f"the DeepSpeed checkpoint engine {type(current).__name__} is not supported for --resume (its loader may "
            "unpickle code); remove the checkpoint-engine settings (nebula, checkpoint.writer) from engine.ds_config"
        )
    safe = SafeCheckpointEngine.__new__(SafeCheckpointEngine)
    safe.__dict__.update(current.__dict__)
    engine.checkpoint_engine = safe
