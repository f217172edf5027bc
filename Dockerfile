# dsunlearn on CUDA GPUs: PyTorch + DeepSpeed (common ops prebuilt) + this package; entry point `dsunlearn`.
#   docker build -t dsunlearn .
#   docker run --gpus all --ipc=host -v $PWD/runs:/work/runs dsunlearn demo --nproc 1
# Several nodes (no ssh needed): on node r, --network host -e NNODES -e NODE_RANK=r -e NPROC_PER_NODE -e MASTER_ADDR
#   --entrypoint /opt/dsunlearn/launch/multi_node.sh dsunlearn -- unlearn ...   (see launch/multi_node.sh)
FROM pytorch/pytorch:2.7.1-cuda12.6-cudnn9-devel

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    # Ampere, Ada, Hopper: prebuild DeepSpeed's fused ops for the GPUs people rent.
    TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0" \
    DS_BUILD_FUSED_ADAM=1 \
    DS_BUILD_CPU_ADAM=1 \
    DS_BUILD_UTILS=1

# Unpinned on purpose: these follow the base image's distribution (pinning breaks on every base bump).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client libaio-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dsunlearn
# Dependencies first (layer cache), then the code. The base image's CUDA torch satisfies torch>=2.4.
COPY setup.py README.md ./
COPY dsunlearn/__init__.py dsunlearn/__init__.py
RUN pip install "deepspeed>=0.19,<0.20" && pip install -e ".[wandb]"
COPY . .
RUN pip install -e ".[wandb]" --no-deps && ds_report

WORKDIR /work
ENTRYPOINT ["dsunlearn"]
CMD ["--help"]
