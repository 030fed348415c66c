# lpr-edge: the two commands are `make run` and `make test`; both do all set-up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/demo.yaml
# paho-mqtt 1.6 lives beside the venv so tests can prove the 1.x API still works.
PAHO16 := $(VENV)/paho16

.PHONY: help setup setup-train system-deps run test lint vermin sample train-us train-ch finetune-us finetune-ch evaluate install uninstall clean

help:
	@echo "make run         set up, start a local broker if needed, run the demo (configs/demo.yaml)"
	@echo "make test        set up and run the whole test suite"
	@echo "make train-us    rebuild models/us_lprnet_*.onnx from synthetic data (CPU)"
	@echo "make train-ch    rebuild models/ch_lprnet_*.onnx from synthetic data (CPU)"
	@echo "make finetune-us fine-tune the US model on half of ../shared/data/real/us"
	@echo "make evaluate    accuracy of the shipped models on the held-out real crops"
	@echo "make install     install the systemd service under /opt/lpr-edge (DESTDIR=... to stage)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(VENV)/.setup: $(BIN)/python setup.cfg setup.py
	$(BIN)/python -m pip install -q -e '.[opencv,onnx,dev]'
	touch $@

setup: system-deps $(VENV)/.setup

$(VENV)/.setup-train: $(VENV)/.setup
	$(BIN)/python -m pip install -q -e '.[opencv,onnx,dev,train]'
	$(BIN)/python -m pip install -q --target $(PAHO16) 'paho-mqtt==1.6.1'
	touch $@

setup-train: system-deps $(VENV)/.setup-train

system-deps:
	@bash scripts/system-deps.sh

run: setup
	@bash scripts/ensure-broker.sh 127.0.0.1 1883
	$(BIN)/lpr-edge run --config $(CONFIG)

vermin: setup-train
	$(BIN)/vermin -q -t=3.6- --violations --backport dataclasses --no-parse-comments --exclude-regex 'edge/training/.*' edge

lint: vermin

test: setup-train vermin
	$(BIN)/python -m pytest -q tests

sample: setup-train
	$(BIN)/python scripts/make_sample_video.py --out samples/gate_us.mp4

train-us: setup-train
	$(BIN)/python -m edge.training train --spec configs/training/us_slim.yaml --export models/

train-ch: setup-train
	$(BIN)/python -m edge.training train --spec configs/training/ch_slim.yaml --export models/

# Fine-tune the synthetic models on half of the real crops in ../shared/data/real (see configs/training/).
finetune-us: setup-train
	$(BIN)/python -m edge.training train --spec configs/training/us_slim_finetune.yaml \
		--init-from runs/us_lprnet_baseline10_slim/last.pt --export models/

finetune-ch: setup-train
	$(BIN)/python -m edge.training train --spec configs/training/ch_slim_finetune.yaml \
		--init-from runs/ch_lprnet_baseline10_slim/last.pt --export models/

# Accuracy of the shipped models on the held-out halves of the real crops (the figures in models/manifest.yaml).
evaluate: setup
	$(BIN)/lpr-edge evaluate --model models/us_lprnet_baseline10_slim.onnx --data ../shared/data/real/us \
		--only-ids configs/training/splits/us_openalpr_seg_and_ocr_eval.txt --normalize O=0
	$(BIN)/lpr-edge evaluate --model models/ch_lprnet_baseline10_slim.onnx --data ../shared/data/real/ch \
		--only-ids configs/training/splits/ch_lprnet_pytorch_test_eval.txt

install:
	bash scripts/install.sh

uninstall:
	bash scripts/uninstall.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
