"""The batch arithmetic of a run: micro x world x accumulation == global batch (config and world size only).

No torch here (nor the `engine` package, whose import picks DeepSpeed's accelerator with torch):
`rundir.check_output_dir` refuses an impossible batch before the heavy imports.
"""

from __future__ import annotations

from dsunlearn.config import EngineConfig
from dsunlearn.errors import ConfigError


def resolve_batch(e: EngineConfig, world: int) -> tuple[int, int, int]:
    """(micro, accum, global) with micro x world x accum == global, or a ConfigError saying how to fix it."""
    micro, accum = e.micro_batch_size, e.grad_accum_steps
    if accum == 0:  # derive from the global batch
        if e.global_batch_size % (micro * world):
            raise ConfigError(
                f"engine.global_batch_size={e.global_batch_size} is not a multiple of micro_batch_size {micro} x "
                f"world size {world}; set engine.micro_batch_size to a divisor of {e.global_batch_size // world or 1} "
                f"or engine.global_batch_size to a multiple of {micro * world}"
            )
        accum = e.global_batch_size // (micro * world)
    if e.global_batch_size and e.global_batch_size != micro * world * accum:
        gb = e.global_batch_size
        if gb % (world * accum) == 0:
            hint = f"set engine.micro_batch_size={gb // (world * accum)}"
        elif gb % (micro * world) == 0:
            hint = f"set engine.grad_accum_steps={gb // (micro * world)}"
        else:
            hint = f"choose a global batch that is a multiple of world size {world}"
        raise ConfigError(
            f"engine.global_batch_size={e.global_batch_size} != micro_batch_size {micro} x world size {world} x "
            f"grad_accum_steps {accum} = {micro * world * accum}; {hint}"
        )
    return micro, accum, micro * world * accum
