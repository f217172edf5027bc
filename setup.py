"""dsunlearn: distributed LLM unlearning on DeepSpeed."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="dsunlearn",
    version="0.1.0",
    description="Distributed LLM unlearning on DeepSpeed: objectives, sharded gradient geometry, UIPE, TOFU",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["dsunlearn", "dsunlearn.*"]),
    package_data={"dsunlearn": ["configs/*.yaml", "ds_configs/*.json", "data/*.txt"]},
    include_package_data=True,
    install_requires=[
        # torch is not pinned to a build: install it first (README) so that CPU machines get the CPU
        # wheel and GPU machines the CUDA one; any torch >= 2.4 works.
        "torch>=2.4",
        # dsunlearn reaches into DeepSpeed's ZeRO internals (engine/), verified on 0.19.x only.
        "deepspeed>=0.19,<0.20",
        "transformers>=4.46",
        "datasets>=3.0",
        "accelerate>=1.0",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "scipy>=1.10",
        "numpy>=1.24",
        "rouge_score>=0.1.2",
        "nltk",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        # LoRA and other adapters (model.adapter): peft wraps the HF model; its adapter format is what we save.
        "peft>=0.13",
    ],
    extras_require={
        # ruff: CI (.ci/run) lints and format-checks after the tests; its formatter's style changes between
        # minor versions, so the range is the one the code is formatted with.
        "test": ["pytest>=8", "pytest-timeout>=2.2", "ruff>=0.17,<0.18"],
        "wandb": ["wandb>=0.17"],
        "dev": ["ruff>=0.17,<0.18", "pytest>=8", "pytest-timeout>=2.2", "wandb>=0.17"],
    },
    entry_points={"console_scripts": ["dsunlearn=dsunlearn.cli:main"]},
)
