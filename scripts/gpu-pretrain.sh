#!/usr/bin/env bash
# Pretrain a recipe (by default the shipped one, configs/pretrained.yaml) on a GPU machine that has torch,
# torch-geometric and lightning but not this project's other dependencies, for a fixed wall-clock budget,
# judge the network on the validation MDPs offline, and keep what it wrote.
#
#   bash scripts/gpu-pretrain.sh fetch          # here, with pip: the missing wheels into .whl/ (ignored by git)
#   bash scripts/gpu-pretrain.sh run [MINUTES]  # there, from the repository root, .whl/ carried along:
#                                               # installs them into /tmp/site, trains MINUTES (default 8) with
#                                               # the recipe on the GPU, exports the network to $OUT and
#                                               # benchmarks it offline on the validation MDPs
#
# Settings by environment: CONFIG (configs/pretrained.yaml; configs/reference.yaml is the published
# reference's scale), ACCELERATOR (gpu), WORKERS (data loader processes, 12: the prior is sampled on the
# CPU), SEED (0), EXTRA (more `rlfm fit` arguments, e.g. "--trainer.max_steps 20000"), JUDGE_SEEDS (16: the
# seeds of the offline validation benchmark; 0 skips it), JUDGE_SEED (its first seed, 3000; pick unspent ones),
# JUDGE_SIZES (its dataset sizes, 16,64,256,1024,4096,16384), JUDGE_WORKERS (its processes, 8).
# With ACCELERATOR=cpu and a short MINUTES it runs anywhere the project is installed (the smoke test before
# a device session).
# The recipe's cosine schedule spans max_steps (6,000): a run stopped by the clock before that never reaches
# its low learning rate, so once the GPU's steps per minute are known, give EXTRA="--trainer.max_steps N"
# with N that fits the budget. The log (fit.log), the network (network.pt, the compact format of
# `rlfm export`), the TensorBoard events (tensorboard.tgz) and the offline validation benchmark of the network
# as it would ship (validation/: results.json, table.md, a figure; `rlfm compare BASE $OUT/validation` judges
# it against a base run on the same seeds) are written to $OUT (./gpu-run without it).
set -euo pipefail
WHEELS=(jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 gymnasium==1.4.0
        farama-notifications==0.0.6)

case "${1:-}" in
fetch)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
  ls .whl
  ;;
run)
  minutes="${2:-8}"
  out="${OUT:-gpu-run}"
  mkdir -p "$out"
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  python3 - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
  logs="$(mktemp -d)"  # checkpoints stay here (removed on exit); only the exports go to $OUT
  trap 'rm -rf "$logs"' EXIT
  start=$(date +%s)
  # shellcheck disable=SC2086
  config="${CONFIG:-configs/pretrained.yaml}"
  python3 -m rlfm fit --config "$config" \
    --seed_everything "${SEED:-0}" --data.init_args.seed "${SEED:-0}" \
    --trainer.accelerator "${ACCELERATOR:-gpu}" --trainer.max_time "00:00:$(printf '%02d' "$minutes"):00" \
    --trainer.default_root_dir "$logs" --data.init_args.num_workers "${WORKERS:-12}" ${EXTRA:-} \
    2>&1 | tr '\r' '\n' | { grep -v "^Epoch .*it/s" || true; } | tee "$out/fit.log"
  echo "trained for $(( $(date +%s) - start )) s" | tee -a "$out/fit.log"
  last="$(ls -t "$logs"/lightning_logs/version_*/checkpoints/last.ckpt | head -1)"
  python3 -m rlfm export "$last" "$out/network.pt" --note "$config on $(uname -n), ${minutes} min"
  tar -czf "$out/tensorboard.tgz" --exclude='*.ckpt' -C "$logs" lightning_logs
  if [ "${JUDGE_SEEDS:-16}" -gt 0 ]; then
    python3 -m rlfm benchmark --mode offline --suite validation --agents rlfm --no-grid --no-progress \
      --seeds "${JUDGE_SEEDS:-16}" --seed "${JUDGE_SEED:-3000}" --sizes "${JUDGE_SIZES:-16,64,256,1024,4096,16384}" \
      --default-checkpoint "$out/network.pt" --workers "${JUDGE_WORKERS:-8}" --out "$out/validation" \
      2>&1 | tee "$out/validation.log"
  fi
  ;;
*)
  echo "usage: bash scripts/gpu-pretrain.sh fetch | run [MINUTES]" >&2
  exit 2
  ;;
esac
