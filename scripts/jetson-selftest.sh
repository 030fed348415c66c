#!/usr/bin/env bash
# What a Jetson (or x86 NVIDIA GPU) owner runs to check the TensorRT path on their device (`make selftest`):
#   1. detects the device and says which backends work here (lpr-edge device)
#   2. runs the gpu tests: a real engine per shipped model, reads as ONNX Runtime's, reuse, rebuild, batch 64
#   3. builds or loads FP16 engines and prints plates/s at batch 1, 8, 16, 32, 64, 128 beside NVIDIA's
#      published figures (Nano 16 @ 32, Xavier NX 600 @ 32, AGX Xavier 1021 @ 64, T4 3821 @ 128; those are for
#      baseline18: pass NVIDIA's us_lprnet_baseline18_deployable.onnx as an argument to measure it too)
#   4. runs `lpr-edge bench model`, `bench detector` and `bench pipeline` (ROI 4 x 25 fps, detect 4 x 10/s) on
#      TensorRT: the README's Benchmarks figures for this device
# Writes selftest/selftest.json and selftest/selftest.md (paste the markdown into the README's table), and
# selftest/bench-*.json.
#   scripts/jetson-selftest.sh [path/to/us_lprnet_baseline18_deployable.onnx ...]
# PYTHON=... picks the interpreter (default: the venv's, else python3); OUT=... the output folder.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    PYTHON=python3
    [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
OUT=${OUT:-selftest}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PATH="/usr/local/cuda/bin:$PATH"

echo "== device"
"$PYTHON" -m edge device || { echo "selftest: lpr-edge does not run with $PYTHON" >&2; exit 1; }
if ! "$PYTHON" -c "import tensorrt, pycuda.driver" 2>/dev/null; then
    echo "selftest: TensorRT and pycuda must both import with $PYTHON (README: Jetson and TensorRT)" >&2
    exit 1
fi

echo "== gpu tests"
"$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_tensorrt_gpu.py 2>&1 | tee "$OUT/gpu-tests.txt"
tests_rc=${PIPESTATUS[0]}

echo "== plates/s (FP16, inference only; the first run builds the engines: minutes on a Nano)"
"$PYTHON" -m edge.infer.selftest --out "$OUT" "$@"
bench_rc=$?

# the benchmarks of the README's Benchmarks section, on TensorRT: recognizer and detector per batch, then the
# whole daemon (4 cameras, ROI at 25 fps and detection at 10 a second each); one JSON line each in $OUT/bench-*.json
echo "== lpr-edge bench on TensorRT (model, detector, pipeline)"
engines="$OUT/engines"
bench() {  # NAME ARGS...: the last line (JSON) to $OUT/bench-NAME.json, the table to the terminal
    local name=$1; shift
    "$PYTHON" -m edge bench "$@" --backend tensorrt --engine-dir "$engines" --json | tee "$OUT/bench-$name.txt" \
        && tail -n 1 "$OUT/bench-$name.txt" > "$OUT/bench-$name.json"
}
benches_rc=0
for region in us ch; do
    bench model-$region model --model models/${region}_lprnet_baseline10_mid.onnx --batch 1,8,16,32,64,128 \
        || benches_rc=1
done
bench detector detector --model models/lpr_edge_lpd_mid.onnx --batch 1,8 || benches_rc=1
bench pipeline-roi pipeline --cameras 1,4 --fps 25 --seconds 20 || benches_rc=1
bench pipeline-detect pipeline --mode detect --cameras 1,4 --detect-fps 10 --seconds 20 || benches_rc=1

echo "selftest: gpu tests $([ "$tests_rc" = 0 ] && echo passed || echo FAILED)," \
     "benchmarks $([ "$benches_rc" = 0 ] && echo ran || echo FAILED), results in $OUT/selftest.md and $OUT/bench-*.json"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ] && [ "$benches_rc" = 0 ]
