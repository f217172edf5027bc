"""Run a function on N real processes (gloo, DeepSpeed CPU accelerator) and collect what each returns.

No launcher: `torch.multiprocessing.spawn` with the env DeepSpeed expects and a free port. Each worker's
return value is pickled to a temporary file so tests can compare ranks against a single-process reference.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import traceback

import torch.multiprocessing as mp

from dsunlearn.dist import free_port


def _worker(local_rank, world_size, port, fn, args, out_dir):
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
    )
    import torch

    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        from dsunlearn.dist import init_distributed

        init_distributed()
        result = fn(*args)
        with open(os.path.join(out_dir, f"rank{local_rank}.pkl"), "wb") as f:
            pickle.dump(result, f)
        if dist.is_initialized():
            dist.barrier()  # no rank tears its group down while another still talks to it
    except BaseException:
        with open(os.path.join(out_dir, f"rank{local_rank}.err"), "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    # The result is on disk: leave without the interpreter's teardown, where a native thread still joinable at
    # static destruction once aborted a finished worker ("terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_distributed(fn, world_size: int = 2, *args):
    """Run `fn(*args)` on `world_size` ranks; return the list of per-rank results (rank order).

    `fn` must be a module-level function (it is pickled into the workers).
    """
    with tempfile.TemporaryDirectory() as out_dir:
        try:
            mp.spawn(_worker, args=(world_size, free_port(), fn, args, out_dir), nprocs=world_size, join=True)
        except Exception as e:
            errs = [open(os.path.join(out_dir, n)).read() for n in sorted(os.listdir(out_dir)) if n.endswith(".err")]
            raise RuntimeError("distributed worker failed:\n" + "\n".join(errs)) from e
        results = []
        for r in range(world_size):
            with open(os.path.join(out_dir, f"rank{r}.pkl"), "rb") as f:
                results.append(pickle.load(f))
        return results
