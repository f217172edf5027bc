#!/usr/bin/env bash
# One machine, N GPUs (or N CPU processes with DS_ACCELERATOR=cpu):
#   launch/single_node.sh N [launcher flags] -- <dsunlearn subcommand> [args...]
#   launch/single_node.sh 8 unlearn --config tofu_llama2_7b_npo_gru eval.retain_log=/data/retain90_log.json
#   DS_ACCELERATOR=cpu launch/single_node.sh 2 --master_port 29600 -- unlearn --config tiny_npo engine.micro_batch_size=4
# Flags before "--" go to the launcher, everything after it to dsunlearn (without "--": all to dsunlearn).
# LAUNCHER=deepspeed (default) or torchrun. Several machines: launch/multi_node.sh.
set -euo pipefail
N=${1:?usage: $0 NUM_PROCESSES [launcher flags] -- <dsunlearn subcommand> [args...]}
shift
launcher_flags=()
has_sep=
for a in "$@"; do [ "$a" = "--" ] && has_sep=1 && break; done
if [ -n "$has_sep" ]; then
  while [ "$1" != "--" ]; do
    launcher_flags+=("$1")
    shift
  done
  shift # the "--"
fi
[ "$#" -gt 0 ] || { echo "usage: $0 NUM_PROCESSES [launcher flags] -- <dsunlearn subcommand> [args...]" >&2; exit 2; }
if [ "${DS_ACCELERATOR:-}" = "cpu" ]; then
  # CPU ranks share the cores: one thread each unless the caller says otherwise.
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / N > 0 ? $(nproc) / N : 1 ))}
fi
case "${LAUNCHER:-deepspeed}" in
  deepspeed) exec deepspeed --num_accelerators "$N" "${launcher_flags[@]}" --module dsunlearn "$@" ;;
  torchrun) exec torchrun --standalone --nproc_per_node "$N" "${launcher_flags[@]}" -m dsunlearn "$@" ;;
  *) echo "$0: LAUNCHER must be deepspeed or torchrun, not '$LAUNCHER'" >&2; exit 2 ;;
esac
