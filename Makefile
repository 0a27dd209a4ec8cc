# edge harness: train -> export -> quantize -> engine -> bench -> check -> camera
# `make demo` and `make test` do all set-up on a fresh machine (venv, Python packages, Debian data).

PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
EDGE       := $(VENV)/bin/edge
RUN        ?= runs/demo
PRETRAINED ?= runs/imagenet-lite0
DATA       ?= fashion-mnist
MODEL      ?= tf_efficientnet_lite0
SOURCE     ?= 0
PRESET     ?= demo
ARGS       ?=
# torch / torchvision pins for a plain venv (x86_64 and aarch64 servers); a Jetson keeps JetPack's.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS     ?= train,cpu,opencv,openvino,dev
TRT_STUBS  ?= tensorrt-stubs==10.13.0.35.1
PYTRITON_SPEC ?= nvidia-pytriton==0.7.0

# On a Jetson (or where the system Python already has TensorRT) the venv sees the system packages
# and only what cannot be imported is installed: JetPack's torch, TensorRT, OpenCV and
# onnxruntime-gpu are never replaced.
SYSTEM_STACK := $(shell { test -e /etc/nv_tegra_release || $(PYTHON) -c "import tensorrt" ; } >/dev/null 2>&1 && echo 1)

.PHONY: _pytest install system-deps demo test lint typecheck typings train pretrained export calibrate quantize \
        engine bench check camera device-check clean

comma := ,
# One stamp per EXTRAS value, so `make install EXTRAS=train,gpu,tensorrt` installs what a first
# `make install` did not; $(VENV)/.installed (what lint and typings wait for) follows the latest one.
# Without EXTRAS on the command line (`make test`, `make demo`) the last install's extras are kept:
# the defaults would put `cpu` beside a GPU venv's `gpu`.
LAST_EXTRAS := $(shell cat $(VENV)/.extras 2>/dev/null)
INSTALL_EXTRAS := $(if $(filter file,$(origin EXTRAS)),$(or $(LAST_EXTRAS),$(EXTRAS)),$(EXTRAS))
INSTALLED := $(VENV)/.installed-$(subst $(comma),-,$(INSTALL_EXTRAS))
# The extras whose packages import torch (training, the tests); the others only run models.
TORCH_EXTRAS := train dev
NEEDS_TORCH := $(filter $(TORCH_EXTRAS),$(subst $(comma), ,$(INSTALL_EXTRAS)))

$(INSTALLED): pyproject.toml
ifeq ($(SYSTEM_STACK),1)
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps -e .
	@# the project's own dependencies and the extras' that cannot be imported yet (see edge/_deps.py)
	deps="$$($(PY) -m edge._deps $(subst $(comma), ,$(INSTALL_EXTRAS)))" || exit 1; \
	  if [ -n "$$deps" ]; then eval $(PY) -m pip install -q $$deps; fi
else
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch / torchvision (pinned, with their CUDA libraries: ~5 GB) only for the extras that train or test;
	@# a device's `EXTRAS=cpu,opencv` (or gpu, tensorrt, openvino) runs models without them
	$(if $(NEEDS_TORCH),$(PY) -c "import torch$(comma) torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC))
	$(PY) -m pip install -q -e ".[$(INSTALL_EXTRAS)]"
endif
	@# dev: the tritonserver that `edge serve` runs (and its tests start), without nvidia-pytriton's own
	@# dependencies, which would pin numpy < 2 (edge/triton/serve.py uses only the bundled server's files)
	$(if $(filter dev,$(subst $(comma), ,$(INSTALL_EXTRAS))),$(PY) -m pip install -q --no-deps $(PYTRITON_SPEC))
	echo "$(INSTALL_EXTRAS)" > $(VENV)/.extras
	touch $@

$(VENV)/.installed: $(INSTALLED)
	touch $@

install: $(VENV)/.installed system-deps

# Debian packages the project reads or drives: Fashion-MNIST (demo and tests), libpython3.11 (edge serve's
# bundled Triton stub), Chromium (camera page test).
system-deps:
	@if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null; \
	  else echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (or be online for torchvision's download)"; fi; \
	fi
	@# the shared libpython the bundled Triton Python-backend stub links (edge serve and its tests)
	@if ! ldconfig -p 2>/dev/null | grep -q "libpython3\.11\.so" && [ "$$(id -u)" = 0 ] && [ -z "$$EDGE_NO_LIBPYTHON" ]; then \
	  (apt-get update -qq && apt-get install -y -qq libpython3.11) >/dev/null 2>&1 || echo "libpython3.11 could not be installed: the edge serve tests will skip"; \
	fi
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && [ -z "$$EDGE_NO_CHROMIUM" ]; then \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "chromium could not be installed: the browser test will skip"; \
	fi

# TensorRT type stubs, patched as ../shared/TENSORRT.md section 0 says, for mypy on the TensorRT code
# (edge/tensorrt/build.py, edge/runners/tensorrt_runner.py, edge/runners/tensorrt_engines.py).
typings: $(VENV)/.installed
	@rm -rf typings && mkdir -p typings
	@# --target keeps the stubs out of the venv: there a stub-only `tensorrt` folder would look installed.
	@$(PY) -m pip install -q --no-deps --target typings/.src $(TRT_STUBS)
	@cp -r typings/.src/tensorrt typings/.src/tensorrt_bindings typings/ && rm -rf typings/.src
	@find typings -name '*.pyi' -exec sed -E -i 's/\bin: list\[/in_: list[/g' {} +
	@find typings -name '*.pyi' -exec sed -i 's/power: Weights = None, channel_axis: int)/power: Weights = None, channel_axis: int = 0)/' {} +

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: typings
	$(VENV)/bin/mypy

# The training tests run in a process of their own: one CI run died with SIGSEGV in the first
# in-process training after ~730 tests had loaded every runtime (ONNX Runtime, OpenVINO, OpenCV
# thread pools), and did not reproduce here. A crash names the test it happened in.
RUNNING_TEST := .pytest_cache/running-test
test: install lint typecheck
ifeq ($(strip $(ARGS)),)
	@$(MAKE) --no-print-directory _pytest PYTEST_ARGS="--ignore=tests/train"
	@$(MAKE) --no-print-directory _pytest PYTEST_ARGS="tests/train"
else
	@$(MAKE) --no-print-directory _pytest PYTEST_ARGS="$(ARGS)"
endif

_pytest:
	@echo "$(PY) -m pytest -q $(PYTEST_ARGS)"
	@$(PY) -m pytest -q $(PYTEST_ARGS) || { rc=$$?; \
	  if [ $$rc -gt 128 ] && [ -s $(RUNNING_TEST) ]; then echo "pytest was killed by signal $$((rc - 128)) during $$(cat $(RUNNING_TEST))" >&2; fi; \
	  exit $$rc; }

# ---- the pipeline ------------------------------------------------------------------------------
# The ImageNet-pretrained Lite0 (no training) and its ONNX model: the camera and its benchmark run ONNX.
pretrained: install
	$(EDGE) pretrained --out $(PRETRAINED)
	$(EDGE) export $(PRETRAINED)

$(PRETRAINED)/checkpoint.pt: | install
	$(EDGE) pretrained --out $(PRETRAINED)

$(PRETRAINED)/model.onnx: $(PRETRAINED)/checkpoint.pt
	$(EDGE) export $(PRETRAINED)

train: install
	$(EDGE) train --out $(RUN) --data $(DATA) --model $(MODEL) $(if $(PRESET),--preset $(PRESET)) $(ARGS)

export: install
	$(EDGE) export $(RUN)

calibrate: install
	$(EDGE) calibrate $(RUN) --data $(DATA)

quantize: export calibrate
	$(EDGE) quantize $(RUN) --target cpu --data $(DATA) --method auto
	$(EDGE) quantize $(RUN) --target trt --data $(DATA) --method auto

# ...and proves them: the engines against the float logits of the bundle's verification set (or of the
# run's pinned test split), exit 1 when one disagrees beyond what it was accepted with.
engine: install
	$(EDGE) engine $(RUN) --precision fp16
	$(EDGE) engine $(RUN) --precision int8
	$(EDGE) verify $(RUN) --artifacts 'trt-*'

bench: install
	$(EDGE) bench $(RUN) --eval $(DATA) $(ARGS)

check: install
	$(EDGE) check $(RUN)/bench/report.json $(ARGS)

# RUN=... on the command line picks another run or artifact; by default the pretrained run's model.onnx.
camera: install $(if $(filter command line,$(origin RUN)),,$(PRETRAINED)/model.onnx)
	$(EDGE) camera $(if $(filter command line,$(origin RUN)),$(RUN),$(PRETRAINED)) --source $(SOURCE) --show $(ARGS)

# The main job on the embedded defaults, about 10 minutes on 2 CPU cores.
demo: install
	$(EDGE) pretrained --out $(PRETRAINED)
	$(EDGE) export $(PRETRAINED)
	$(EDGE) train --out $(RUN) --data $(DATA) --model $(MODEL) --preset demo
	$(EDGE) export $(RUN)
	$(EDGE) calibrate $(RUN) --data $(DATA)
	$(EDGE) quantize $(RUN) --target cpu --data $(DATA) --method auto
	$(EDGE) quantize $(RUN) --target trt --data $(DATA) --method auto
	$(EDGE) bench $(RUN) --eval $(DATA) --profile demo
	$(EDGE) camera $(PRETRAINED) --source demo --jsonl $(PRETRAINED)/camera.jsonl --record $(PRETRAINED)/camera.mp4 --every-frame
	$(EDGE) inspect $(RUN)

# On a GPU machine without network: what is installed there, no pip (PYTHONPATH=.).
device-check:
	mkdir -p $${OUT:-runs/device-check}
	PYTHONPATH=. $(PYTHON) -m pytest -q -m "gpu or tensorrt" -rs tests 2>&1 | tee $${OUT:-runs/device-check}/pytest.txt
	PYTHONPATH=. $(PYTHON) -m bench.scripts.cuda_check --out $${OUT:-runs/device-check} 2>&1 | tee $${OUT:-runs/device-check}/bench.txt
	@# every artifact of RUN (an unpacked bundle, or a run) on every backend here, over its verification set
	@if [ -d $(RUN) ]; then PYTHONPATH=. $(PYTHON) -m edge verify $(RUN) --junit $${OUT:-runs/device-check}/verify.xml \
	  --markdown $${OUT:-runs/device-check}/verify.md 2>&1 | tee $${OUT:-runs/device-check}/verify.txt; \
	else echo "edge verify skipped: no $(RUN) here (give RUN=the unpacked bundle)"; fi

clean:
	rm -rf runs typings .pytest_cache .ruff_cache .mypy_cache
