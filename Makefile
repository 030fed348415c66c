# lpr-edge: the two commands are `make run` and `make test`; both do all set-up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# DEMO=loop plays the sample again and again (to watch events from another shell); DEMO=drive reads cars
# driving through a wide view with the plate detector (configs/demo-drive.yaml); the default plays the gate sample once.
DEMO ?= once
CONFIG ?= $(if $(filter loop,$(DEMO)),configs/demo-loop.yaml,$(if $(filter drive,$(DEMO)),configs/demo-drive.yaml,configs/demo.yaml))
# paho-mqtt 1.6 lives beside the venv so tests can prove the 1.x API still works.
PAHO16 := $(VENV)/paho16
# Python 3.6 (JetPack 4.6): where an interpreter exists, the device code's tests also run on it.
PY36 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.6*/bin/python3.6 /usr/bin/python3.6))
VENV36 := .venv36

.PHONY: demo-deps help setup setup-train system-deps run test lint vermin sample train-us train-ch finetune-us finetune-ch evaluate evaluate-val install uninstall clean test-py36 selftest

help:
	@echo "make run         set up, start a local broker if needed, run the demo (configs/demo.yaml); DEMO=loop repeats it,"
	@echo "                 DEMO=drive reads cars driving through a wide view with the plate detector"
	@echo "make test        set up and run the whole test suite"
	@echo "make train-us    pretrain the US model on synthetic plates (a GPU when torch sees one; ~4 h on 2 CPU cores)"
	@echo "make train-ch    pretrain the CH model on synthetic plates (a GPU when torch sees one; ~4 h on 2 CPU cores)"
	@echo "make finetune-us fine-tune the shipped US model on the train parts of ../shared/data/real (us, br)"
	@echo "make finetune-ch fine-tune the shipped CH model on the train parts of ../shared/data/real/ch"
	@echo "make sample      draw the sample video samples/gate_us.mp4 again"
	@echo "make evaluate    accuracy of the shipped models on the evaluation parts of the real crops"
	@echo "make evaluate-val the same on the validation parts (MODELS=folder of candidate models)"
	@echo "make install     install the systemd service under /opt/lpr-edge (DESTDIR=... to stage)"
	@echo "make selftest    on a Jetson / NVIDIA GPU: detect it, run the gpu tests, plates/s per batch (TensorRT)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(VENV)/.setup: $(BIN)/python setup.cfg setup.py
	$(BIN)/python -m pip install -q -e '.[opencv,onnx,dev]'
	touch $@

setup: system-deps $(VENV)/.setup

$(VENV)/.setup-train: $(VENV)/.setup
	$(BIN)/python -m pip install -q -e '.[opencv,onnx,dev,train,bench]'
	$(BIN)/python -m pip install -q --target $(PAHO16) 'paho-mqtt==1.6.1'
	touch $@

setup-train: system-deps $(VENV)/.setup-train

system-deps:
	@bash scripts/system-deps.sh

demo-deps:
	@bash scripts/system-deps.sh demo

# the demo needs only a broker (and mosquitto_sub to watch it); the tests' packages come with `make test`
run: demo-deps $(VENV)/.setup
	@bash scripts/ensure-broker.sh 127.0.0.1 1883
	$(BIN)/lpr-edge run --config $(CONFIG)

vermin: setup-train
	$(BIN)/vermin -q -t=3.6- --violations --backport dataclasses --no-parse-comments --exclude-regex 'edge/training/.*' edge

lint: vermin

test: setup-train vermin test-py36
	$(BIN)/python -m pytest -q tests

$(VENV36)/.setup: setup.cfg setup.py
	rm -rf $(VENV36)
	$(PY36) -m venv $(VENV36)
	$(VENV36)/bin/python -m pip install -q --upgrade 'pip<22'
	$(VENV36)/bin/python -m pip install -q --upgrade 'setuptools<60' 'wheel<0.38' 
	$(VENV36)/bin/python -m pip install -q --only-binary opencv-python-headless,numpy,onnxruntime,onnx \
		-e '.[opencv,onnx]' 'pytest<7.1' 'onnx<1.12' 'protobuf<4'
	touch $@

# The device code's tests on a real Python 3.6 (not the training tools, which need torch).
test-py36: setup
ifeq ($(PY36),)
	@echo "test-py36: no Python 3.6 on this machine; only vermin checks 3.6 compatibility"
else
	@$(MAKE) --no-print-directory $(VENV36)/.setup
	PYTHONPATH=tests $(VENV36)/bin/python -m pytest -q -p no:cacheprovider tests --ignore=tests/test_training.py --ignore=tests/test_detector_training.py \
		-k 'not paho_1_6'
endif

sample: setup-train
	$(BIN)/python scripts/make_sample_video.py --out samples/gate_us.mp4

train-us: setup-train
	$(BIN)/python -m edge.training train --spec configs/training/us_mid.yaml --export models/

train-ch: setup-train
	$(BIN)/python -m edge.training train --spec configs/training/ch_mid.yaml --export models/

# Fine-tune the shipped models, from their own ONNX files, on the train parts of the real crops in
# ../shared/data/real (configs/training/splits/, scripts/make_splits.py); the val parts pick the epoch.
# Runs stay outside the repository (RUNS); the result replaces models/<name>.onnx, which the daemon refuses
# until scripts/update_manifest.py has written its sha256 (and measured it on the val and eval parts). To try
# a model first: export it elsewhere and run make evaluate-val MODELS=<that folder>.
RUNS ?= $(HOME)/.cache/lpr-edge/runs
finetune-us finetune-ch: finetune-%: setup-train
	$(BIN)/python -m edge.training train --spec configs/training/$*_mid_finetune.yaml \
		--init-from models/$*_lprnet_baseline10_mid.onnx --output-dir $(RUNS)/$*_finetune --export models/ --fp16-weights

# Accuracy on the real crops: `make evaluate` measures the evaluation parts only (the figures in
# models/manifest.yaml: measured once per shipped model), tight crops and as a detector cuts them;
# `make evaluate-val` the validation parts (what picks epochs and recipes), of MODELS (default models/).
SPLITS := configs/training/splits
MODELS ?= models
US_SETS := us:openalpr_seg_and_ocr
CH_SETS := ch:lprnet_pytorch_test ch:easypr_general_test ch:easypr_svm_hasplate ch:ccpd_samples
define evaluate_parts
	for crops in tight detector; do \
	$(BIN)/lpr-edge evaluate --model $(2)/us_lprnet_baseline10_mid.onnx --characters models/us_lp_characters.txt \
		--data ../shared/data/real/us --normalize O=0 --crops $$crops \
		$(foreach s,$(US_SETS),--only-ids $(SPLITS)/$(subst :,_,$(s))_$(1).txt) || exit 1; \
	$(BIN)/lpr-edge evaluate --model $(2)/ch_lprnet_baseline10_mid.onnx --characters models/ch_lp_characters.txt \
		--data ../shared/data/real/ch --crops $$crops \
		$(foreach s,$(CH_SETS),--only-ids $(SPLITS)/$(subst :,_,$(s))_$(1).txt) || exit 1; \
	done
endef

evaluate: setup
	@$(call evaluate_parts,eval,models)

evaluate-val: setup
	@$(call evaluate_parts,val,$(MODELS))

install:
	bash scripts/install.sh

# On a Jetson or an x86 NVIDIA GPU with TensorRT and pycuda (README: Jetson and TensorRT); no venv set-up here,
# it runs with the interpreter that sees JetPack's TensorRT (PYTHON=...).
selftest:
	bash scripts/jetson-selftest.sh

uninstall:
	bash scripts/uninstall.sh

clean:
	rm -rf $(VENV) $(VENV36) build *.egg-info .pytest_cache
