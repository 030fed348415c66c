#!/usr/bin/env bash
# Train lpr-edge's plate detector (a detect spec, default configs/training/detect_mid.yaml) on one CUDA GPU
# for at most 9 minutes, then export the best-val checkpoint to ONNX (checked against PyTorch) and measure it
# on the val split.
# Installs nothing: needs a Python with the train extra (torch with CUDA, onnx, onnxruntime, opencv, Pillow).
# Results (checkpoints, history.json, logs, the ONNX) go under $OUT/<spec name>_gpu when OUT is set, else
# runs/<spec name>_gpu (a fresh run clears the folder's checkpoints first). Knobs: PYTHON, DATA (scene root),
# MINUTES (the run's training budget in all, resumes included, default 7.5, 9 at most with loading and the
# final validation), EPOCHS (the schedule's span, default 60), BATCH (64), WORKERS (data-loading processes,
# default cores - 2), RESUME=1 (go on from last.pt: give it a larger MINUTES), SPEC (default
# configs/training/detect_mid.yaml; the fine-tune of the shipped detector is
# SPEC=configs/training/detect_mid_finetune.yaml INIT=models/lpr_edge_lpd_mid.onnx).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
data=${DATA:-}
if [ -z "$data" ]; then
    for d in ../shared/data/detect shared/data/detect; do
        if [ -d "$d" ]; then data=$d; break; fi
    done
fi
[ -n "$data" ] || { echo "error: no scene root (set DATA=.../shared/data/detect)" >&2; exit 2; }
spec=${SPEC:-configs/training/detect_mid.yaml}
out=${OUT:-runs}/$(basename "$spec" .yaml)_gpu
mkdir -p "$out"
# a fresh run must not export (or resume) another run's checkpoint left in the folder
[ -n "${RESUME:-}" ] || rm -f "$out/best.pt" "$out/last.pt" "$out/history.json"
minutes=${MINUTES:-7.5}
cores=$(nproc)
workers=${WORKERS:-$(( cores > 3 ? cores - 2 : 1 ))}
common=(--spec "$spec" --data "$data" --output-dir "$out")
"$py" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; print(torch.cuda.get_device_name(0))"
# the hard limit: 9 minutes for loading, training and the last validation together
rc=0
timeout --signal=INT --kill-after=20 540 "$py" -m edge.training detect "${common[@]}" --device cuda \
    --workers "$workers" --time-budget "$minutes" --epochs "${EPOCHS:-60}" --batch-size "${BATCH:-64}" \
    ${RESUME:+--resume} ${INIT:+--init-from "$INIT"} 2>&1 | tee "$out/train.log" || rc=$?
[ -f "$out/best.pt" ] || { echo "error: no checkpoint written (rc $rc)" >&2; exit 1; }
"$py" -m edge.training detect "${common[@]}" --checkpoint "$out/best.pt" \
    --export "$out/lpr_edge_lpd_mid.onnx" 2>&1 | tee "$out/export.log"
"$py" -m edge.training detect "${common[@]}" --checkpoint "$out/best.pt" --evaluate val | tee "$out/val.json"
cp "$out/history.json" "$out/history-final.json" 2>/dev/null || true
echo "results in $out"
