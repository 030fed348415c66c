#!/usr/bin/env bash
# Fine-tune the shipped US and CH recognizers (configs/training/{us,ch}_mid_finetune.yaml) on one CUDA GPU in
# at most 10 minutes, starting from the shipped ONNX files, and export the epoch best on the validation parts.
# Writes one folder, $OUT/recognizers (else runs/recognizers): per region the exported ONNX (FP16-stored
# weights, ~5.5 MB; the file the next fine-tune starts from), its .fp16.onnx variant for TensorRT 11, the
# training history and the log; 8 files, each under 16 MiB. Installs nothing: needs a Python with the train
# extra (torch, onnx, onnxruntime, opencv, Pillow). Knobs: PYTHON, DEVICE (cuda; cpu to try it here),
# REGIONS ("us ch"), EPOCHS (the specs' num_epochs when unset), MINUTES (budget a region, default 4),
# SMOKE=1 (one short epoch a region: try the script on a CPU before a GPU session).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
device=${DEVICE:-cuda}
out=${OUT:-runs}/recognizers
work=${WORK:-${TMPDIR:-/tmp}/lpr-edge-train-on-device}
mkdir -p "$out" "$work"
minutes=${MINUTES:-4}
epochs=${EPOCHS:-}
if [ -n "${SMOKE:-}" ]; then minutes=0.3; epochs=1; fi
if [ "$device" = cuda ]; then
    "$py" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; print(torch.cuda.get_device_name(0))"
fi
for region in ${REGIONS:-us ch}; do
    name=${region}_lprnet_baseline10_mid
    # a region's hard limit: its budget plus loading, validation and the export
    limit=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 + 60 }')
    timeout --signal=INT --kill-after=20 "$limit" "$py" -m edge.training train \
        --spec configs/training/${region}_mid_finetune.yaml --device "$device" --no-progress \
        --init-from models/$name.onnx --output-dir "$work/$name" --time-budget "$minutes" ${epochs:+--epochs "$epochs"} \
        --export "$out/$name.onnx" --fp16-weights > "$out/$name.log" 2>&1 || { tail -5 "$out/$name.log" >&2; exit 1; }
    cp "$work/$name/history.json" "$out/$name.history.json"
    tail -3 "$out/$name.log"
done
ls -l "$out"
echo "results in $out; measure them on the val parts: make evaluate-val MODELS=$out"
