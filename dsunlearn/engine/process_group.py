"""DeepSpeed's side of the process group: which accelerator DeepSpeed drives, and its `init_distributed`.

`dsunlearn.dist` is the library's face of the process group (rank, world size, the few collectives) and imports
neither torch nor DeepSpeed until a process group is wanted; this module is where DeepSpeed comes in.
"""

from __future__ import annotations

import os


def select_accelerator() -> None:
    """DS_ACCELERATOR=cpu when it is unset and no GPU is present. DeepSpeed reads it once, when it is first
    imported: `dsunlearn/engine/__init__.py` calls this, so every engine module runs it before DeepSpeed."""
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"


def init_process_group() -> None:
    """Initialise torch.distributed through DeepSpeed, idempotently.

    Works under the `deepspeed` launcher, `torchrun`, `torch.multiprocessing.spawn` (tests set the env) and a
    bare `python` process (a world of one on a free local port). On CPU the backend is gloo and DeepSpeed's
    shared-memory comm op is disabled: it is JIT-compiled with the system compiler on first use (about 50 s)
    and only speeds up intra-node all-reduce, which these CPU runs do not need.
    """
    import torch
    import torch.distributed as tdist

    from dsunlearn.dist import free_port, on_cpu

    if tdist.is_available() and tdist.is_initialized():
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    select_accelerator()
    import deepspeed

    if on_cpu():
        import deepspeed.ops

        # Several ranks on one machine: split the cores instead of oversubscribing them (the launchers do not
        # set OMP_NUM_THREADS; oversubscribed CPU ranks run much slower).
        if "OMP_NUM_THREADS" not in os.environ:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend="gloo")
    else:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        deepspeed.init_distributed(dist_backend="nccl")
