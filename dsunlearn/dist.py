"""The process group as the library sees it: rank, world size, the device, and the few collectives it needs.

Importing this module imports neither torch nor DeepSpeed: until `init_distributed` (DeepSpeed's part lives in
`engine/process_group.py`) a process is rank 0 of a world of one, and the collectives are no-ops, so the
commands can refuse bad input before paying for the heavy imports.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (for single-node rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_cpu() -> bool:
    """Whether DeepSpeed runs on its CPU accelerator (DS_ACCELERATOR=cpu, set when no GPU is present)."""
    from dsunlearn.engine.process_group import select_accelerator

    select_accelerator()
    return os.environ.get("DS_ACCELERATOR") == "cpu"


def init_distributed() -> None:
    """Initialise torch.distributed (through DeepSpeed: `engine/process_group.py`), idempotently; a bare
    `python` process becomes a world of one."""
    from dsunlearn.engine.process_group import init_process_group

    init_process_group()


def active_group():
    """torch.distributed while a process group is up, else None. Never imports torch: a process that has not
    imported it has no process group, and the refusals that run before the heavy imports stay quick."""
    tdist = sys.modules.get("torch.distributed")
    return tdist if tdist is not None and tdist.is_available() and tdist.is_initialized() else None


def rank() -> int:
    g = active_group()
    return g.get_rank() if g is not None else 0


def world_size() -> int:
    g = active_group()
    return g.get_world_size() if g is not None else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    g = active_group()
    if g is not None and g.get_world_size() > 1:
        g.barrier()


def device() -> torch.device:
    """The device this rank computes on: its local GPU, or the CPU."""
    import torch

    if on_cpu() or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks of a small tensor (scalars, per-layer vectors); a no-op on one process.

    On NCCL the tensor must live on the GPU; callers pass float64 partial sums and get them back in place.
    """
    g = active_group()
    if g is not None and g.get_world_size() > 1:
        if not on_cpu() and t.device.type == "cpu":
            moved = t.to(device())
            g.all_reduce(moved)
            t.copy_(moved.cpu())
        else:
            g.all_reduce(t)
    return t


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from `src` to every rank (used for run ids, resolved paths)."""
    g = active_group()
    if g is None or g.get_world_size() == 1:
        return obj
    box = [obj]
    g.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's object, in rank order."""
    g = active_group()
    if g is None or g.get_world_size() == 1:
        return [obj]
    out = [None] * g.get_world_size()
    g.all_gather_object(out, obj)
    return out
