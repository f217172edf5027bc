import os
import sys

# DeepSpeed picks its accelerator at import time: the test suite always runs on the CPU accelerator.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

_LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _launcher_env_restored():
    """A test that runs a job in-process (``dsunlearn.cli.main([...])``, a recipe) initialises a process group of
    one, which writes MASTER_PORT & co. into os.environ while its store keeps listening on that port; a later
    test passing ``{**os.environ}`` to a subprocess would then hand it a port in use (EADDRINUSE). The launcher
    variables are put back as they were after every test; the in-process group itself stays up."""
    before = {k: os.environ.get(k) for k in _LAUNCHER_ENV}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def synthetic_splits():
    from dsunlearn.suites.tofu import synthetic

    return synthetic.generate(seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(synthetic_splits):
    """The embedded default's byte-level BPE, trained here on the synthetic corpus (no download)."""
    from dsunlearn.models.tiny import train_tokenizer
    from dsunlearn.suites.tofu import synthetic

    return train_tokenizer(list(synthetic.corpus(synthetic_splits)), vocab_size=600, max_length=128)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: tiny matmuls gain nothing from threads, and on a shared 2-core box
    oversubscription makes them up to 10x slower. Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
