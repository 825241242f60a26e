#!/usr/bin/env bash
# One GPU machine, start to finish: benchmark, a wall-clock-budgeted training run, evaluation, a plot.
#
#   scripts/gpu_run.sh [OUT_DIR]
#
# Settings (environment variables): CONFIG (configs/full.yaml), TRAIN_SECONDS (420), BENCH_SECONDS (20),
# EVAL_EPISODES (16), PYTHON (python3, or .venv/bin/python where it exists), SET (extra --set overrides,
# space-separated), RECON_STEPS (0: none; else scripts/recon_report.py runs last with this many steps
# per loss, on the GPU, with RECON_ARGS as further options). On a machine without gymnasium and ale-py,
# put their wheels in .whl/ first (see the README): they are installed into /tmp/site.
# Leaves OUT_DIR/benchmark.json, OUT_DIR/run/ (metrics.csv, checkpoints, TensorBoard), OUT_DIR/eval.json,
# OUT_DIR/curve.png and OUT_DIR/log.txt (and OUT_DIR/recon/ with RECON_STEPS).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-runs/gpu-$(date +%Y%m%d-%H%M%S)}
CONFIG=${CONFIG:-configs/full.yaml}
TRAIN_SECONDS=${TRAIN_SECONDS:-420}
BENCH_SECONDS=${BENCH_SECONDS:-20}
EVAL_EPISODES=${EVAL_EPISODES:-16}
RECON_STEPS=${RECON_STEPS:-0}
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

overrides=()
for kv in ${SET:-}; do overrides+=(--set "$kv"); done

echo "== $(date -u +%FT%TZ) $CONFIG, $TRAIN_SECONDS s of training, out: $OUT"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
"$PYTHON" scripts/benchmark.py --config "$CONFIG" --seconds "$BENCH_SECONDS" --json "$OUT/benchmark.json" "${overrides[@]}"
"$PYTHON" scripts/train.py --config "$CONFIG" --run-dir "$OUT/run" --no-progress \
    --set "train.time_limit_s=$TRAIN_SECONDS" "${overrides[@]}"
"$PYTHON" scripts/evaluate.py --checkpoint "$OUT/run/checkpoints/latest.pt" --episodes "$EVAL_EPISODES" \
    --json "$OUT/eval.json"
"$PYTHON" scripts/plot_run.py "$OUT/run" --out "$OUT/curve.png"
if [ "$RECON_STEPS" -gt 0 ]; then
    # shellcheck disable=SC2086  # RECON_ARGS is a list of options
    "$PYTHON" scripts/recon_report.py --out "$OUT/recon" --steps "$RECON_STEPS" --threads "$(nproc)" \
        --no-progress ${RECON_ARGS:-}
fi
echo "== done: $OUT"
