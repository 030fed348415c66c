#!/usr/bin/env bash
# Rebuild both shipped models from scratch: synthetic pre-training (the repo alone), then fine-tuning on the
# train parts of the real crops in ../shared/data/real (configs/training/splits/; val picks the epoch).
# Logs go to runs/<name>.log. About 10 min on one H100 GPU, about 10 hours on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
for region in ${REGIONS:-us ch}; do
    $py -m edge.training train --spec configs/training/${region}_mid.yaml --no-progress \
        > runs/${region}_pretrain.log 2>&1
    $py -m edge.training train --spec configs/training/${region}_mid_finetune.yaml --no-progress \
        --init-from runs/${region}_lprnet_baseline10_mid/last.pt --export models/ --fp16-weights > runs/${region}_finetune.log 2>&1
done
