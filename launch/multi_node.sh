#!/usr/bin/env bash
# Several machines, the same environment and data paths on each (a shared filesystem for --output-dir).
#   launch/multi_node.sh [launcher flags] -- <dsunlearn subcommand> [args...]
# Flags before "--" go to the launcher (deepspeed or torchrun), everything after it to dsunlearn. Without
# "--" all arguments are dsunlearn's.
#
# 1. No ssh (one launch per node, each with its node rank; torchrun or deepspeed --no_ssh):
#      # on node r of N (r = 0 on the node whose address is MASTER_ADDR):
#      NNODES=2 NODE_RANK=r NPROC_PER_NODE=8 MASTER_ADDR=10.0.0.1 launch/multi_node.sh -- unlearn --config ...
#    LAUNCHER=torchrun (default when NODE_RANK is set): torchrun --nnodes N --node_rank r --nproc_per_node G
#      --master_addr A --master_port P (static rendezvous: global rank = r * G + local rank).
#    LAUNCHER=deepspeed: deepspeed --hostfile H --no_ssh --node_rank r ... (H = HOSTFILE, or one written
#      from NNODES x NPROC_PER_NODE; its host names are then placeholders, no ssh is used).
# 2. ssh / pdsh from the first node (NODE_RANK unset, LAUNCHER=deepspeed): DeepSpeed starts every host of
#      HOSTFILE ("hostname slots=GPUS" lines) over passwordless ssh:
#      HOSTFILE=hosts MASTER_ADDR=node0 launch/multi_node.sh -- unlearn --config tofu_llama2_7b_npo_gru
# MASTER_PORT defaults to 29500. DRY_RUN=1 prints the launcher command instead of running it.
# DS_ACCELERATOR=cpu (CPU ranks): OMP_NUM_THREADS defaults to cores / NPROC_PER_NODE. The deepspeed
# launcher's --no_ssh path also runs on CPU (tests/integration/test_multi_node.py runs both forms).
# The global batch (engine.global_batch_size) stays the same whatever the node count: dsunlearn derives the
# accumulation steps (engine.grad_accum_steps: 0) and refuses a product that does not divide.
set -euo pipefail

launcher_flags=()
has_sep=
for a in "$@"; do [ "$a" = "--" ] && has_sep=1 && break; done
if [ -n "$has_sep" ]; then
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    launcher_flags+=("$1")
    shift
  done
  shift # the "--"
fi
[ "$#" -gt 0 ] || { echo "usage: $0 [launcher flags] -- <dsunlearn subcommand> [args...]" >&2; exit 2; }

: "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
MASTER_PORT=${MASTER_PORT:-29500}
NODE_RANK=${NODE_RANK:-}
if [ -n "$NODE_RANK" ]; then LAUNCHER=${LAUNCHER:-torchrun}; else LAUNCHER=${LAUNCHER:-deepspeed}; fi

if [ "${DS_ACCELERATOR:-}" = "cpu" ] && [[ "${NPROC_PER_NODE:-}" =~ ^[0-9]+$ ]]; then
  # CPU ranks share the cores: one thread each unless the caller says otherwise.
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / NPROC_PER_NODE > 0 ? $(nproc) / NPROC_PER_NODE : 1 ))}
fi

use_exec=1
run() {
  if [ -n "${DRY_RUN:-}" ]; then printf '%q ' "$@"; echo; exit 0; fi
  if [ -n "$use_exec" ]; then exec "$@"; fi
  "$@"
  exit
}

case "$LAUNCHER" in
  torchrun)
    : "${NODE_RANK:?torchrun needs NODE_RANK (0..NNODES-1): one launch per node}"
    : "${NNODES:?set NNODES to the number of nodes}"
    run torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "${NPROC_PER_NODE:-gpu}" \
      --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" "${launcher_flags[@]}" -m dsunlearn "$@"
    ;;
  deepspeed)
    if [ -z "$NODE_RANK" ]; then
      : "${HOSTFILE:?set HOSTFILE to a DeepSpeed hostfile (lines: 'host slots=8'), or NODE_RANK for no ssh}"
      run deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
        "${launcher_flags[@]}" --module dsunlearn "$@"
    fi
    if [ -z "${HOSTFILE:-}" ]; then
      : "${NNODES:?set NNODES (or HOSTFILE) for deepspeed --no_ssh}"
      [[ "${NPROC_PER_NODE:-}" =~ ^[0-9]+$ ]] || { echo "$0: set NPROC_PER_NODE (processes per node)" >&2; exit 2; }
      HOSTFILE=$(mktemp "${TMPDIR:-/tmp}/dsunlearn_hostfile.XXXXXX")
      trap 'rm -f "$HOSTFILE"' EXIT
      for ((i = 0; i < NNODES; i++)); do echo "node$i slots=$NPROC_PER_NODE"; done >"$HOSTFILE"
      use_exec=  # run, not exec: the trap removes the written hostfile when the launcher exits
    fi
    accel=()
    [[ "${NPROC_PER_NODE:-}" =~ ^[0-9]+$ ]] && accel=(--num_accelerators "$NPROC_PER_NODE")
    run deepspeed --hostfile "$HOSTFILE" --no_ssh --node_rank "$NODE_RANK" ${NNODES:+--num_nodes "$NNODES"} \
      "${accel[@]}" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
      "${launcher_flags[@]}" --module dsunlearn "$@"
    ;;
  *)
    echo "$0: LAUNCHER must be torchrun or deepspeed, not '$LAUNCHER'" >&2
    exit 2
    ;;
esac
