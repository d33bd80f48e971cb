# minivar — the two commands a newcomer needs: `make demo` and `make test`.
# Each creates (or reuses) .venv by itself.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
STAMP   := $(VENV)/.minivar-installed
# On a machine without an NVIDIA driver we pin the CPU build of torch: an unpinned `torch`
# would pull a multi-GB CUDA build. On GPU machines pip picks the default (CUDA) wheel.
TORCH   := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
# mamba-ssm's pure-torch reference functions are our parity oracle (tests/test_mamba2_oracle.py).
# On CPU they install without compiling any CUDA code.
MAMBA_REF := mamba-ssm==2.3.2.post1

.PHONY: install demo test test-fast lab student bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo "== minivar: preparing $(VENV) (first time: ~2-3 min) =="
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,data]"
	MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE $(BIN)/pip install -q --no-build-isolation --no-deps $(MAMBA_REF)
	$(BIN)/pip install -q transformers
	@touch $(STAMP)
	@echo "== minivar installed in $(VENV) =="

demo: $(STAMP)
	$(PYTHON) -m minivar demo --out runs/demo

test: $(STAMP)
	$(PYTHON) -m pytest -q -ra

test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -ra -m "not slow"

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(PYTHON) benchmarks/tokenizer.py

clean:
	rm -rf $(VENV) build *.egg-info runs
