# minivar — the two commands a newcomer needs: `make demo` and `make test`.
# Each creates (or reuses) .venv by itself.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
STAMP   := $(VENV)/.minivar-installed
# torch: the one pin the numbers in this repository were produced with. Where it comes from:
#  - Linux without an NVIDIA driver: PyTorch's own CPU wheel index first (the public PyPI wheel for
#    Linux is the multi-GB CUDA build), with a short timeout and no retries, then the default index;
#  - Linux with an NVIDIA driver: the newest CUDA build from the default index (with its own triton);
#  - macOS and others: the default index (its wheels are CPU / MPS builds).
TORCH_PIN   := torch==2.13.0
# Triton for the CPU interpreter (tests, notebook 07); a CUDA torch already depends on its own.
TRITON_PIN  := triton==3.7.1
CPU_INDEX   := https://download.pytorch.org/whl/cpu
HAS_NVIDIA  := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
OS          := $(shell uname -s)
# mamba-ssm's pure-torch reference functions are the parity oracle of tests/test_mamba2_oracle.py.
# On CPU it installs without compiling CUDA code and without its dependencies; its modules need
# only einops (the test stubs the rest).
MAMBA_REF   := mamba-ssm==2.3.2.post1 einops==0.8.2

.PHONY: install demo test test-fast lab student handout notebooks bench clean clean-runs data-fashion data-emoji

# The numbered notebooks: jupytext py:percent sources (NN_*.py) paired with executed NN_*.ipynb.
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo "== minivar: preparing $(VENV) (first time: ~2-3 min) =="
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
ifeq ($(HAS_NVIDIA),yes)
	$(BIN)/pip install -q torch
else ifeq ($(OS),Linux)
	@echo "== torch (CPU build): trying PyTorch's CPU index, then the default index =="
	$(BIN)/pip install -q --index-url $(CPU_INDEX) --timeout 5 --retries 0 "$(TORCH_PIN)" 2>/dev/null \
	  || { echo "== PyTorch's CPU index did not answer: the default index =="; $(BIN)/pip install -q "$(TORCH_PIN)"; }
	$(BIN)/pip install -q "$(TRITON_PIN)"
else
	$(BIN)/pip install -q "$(TORCH_PIN)"
endif
	$(BIN)/pip install -q -e ".[dev]"
	MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE $(BIN)/pip install -q --no-build-isolation --no-deps $(MAMBA_REF)
	@touch $(STAMP)
	@echo "== minivar installed in $(VENV) =="

demo: $(STAMP)
	$(PYTHON) -m minivar demo --out runs/demo

# Unit tests (including the notebook/student-copy sync checks, the student copies executed from
# their own folder and the grader); the tests that compare numbers with ones produced on another
# machine once more with PyTorch's portable (non-vectorised) kernels, which round differently from
# the AVX2 / AVX-512 ones, so that a change that only passes on one kind of CPU fails here; then
# every notebook re-run by nbval in strict mode: each cell's fresh output must equal the committed
# one. Test files and notebooks run JOBS at a time (pytest-xdist, --dist loadfile: a file's tests,
# and a notebook's cells in one kernel, stay together and in order), one thread each, so 2 fit a
# 2-core machine.
JOBS ?= 2
test: $(STAMP)
	$(PYTHON) -m pytest -q -ra -n $(JOBS) --dist loadfile
	ATEN_CPU_CAPABILITY=default $(PYTHON) -m pytest -q -ra -p no:cacheprovider -m portability
	$(if $(NOTEBOOKS),$(PYTHON) -m pytest -q -ra -p no:cacheprovider -n $(JOBS) --dist loadfile --nbval --nbval-current-env $(NOTEBOOKS))

test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -ra -m "not slow"

# Student copies (solutions blanked) in notebooks/student/; tests fail when they are stale.
student: $(STAMP)
	$(PYTHON) tools/make_student.py

# A course folder for students (student copies + the files they read, no solutions): make handout OUT=DIR
handout: $(STAMP)
	$(PYTHON) -m minivar handout --out $(or $(OUT),handout)

# Re-execute every notebook from its .py source and store the outputs in the paired .ipynb
# (run after editing a notebook, then `make student`, then commit all three).
notebooks: $(STAMP)
	cd notebooks && for f in [0-9][0-9]_*.py; do ../$(BIN)/jupytext --to ipynb --execute "$$f" || exit 1; done
	$(PYTHON) tools/make_student.py

lab: $(STAMP)
	$(BIN)/pip install -q -e ".[lab]"
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(PYTHON) benchmarks/tokenizer.py

# Datasets from Debian packages (see data/README.md); nothing is downloaded at run time.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET = $(SUDO) apt-get install -y $(1) || { $(SUDO) apt-get update && $(SUDO) apt-get install -y $(1); }

data-fashion: $(STAMP)
	@test -d /usr/share/datasets/fashion-mnist || $(call APT_GET,dataset-fashion-mnist) \
	  || { echo "could not install dataset-fashion-mnist; put the four IDX files in a folder and pass --data-path DIR"; exit 1; }
	$(PYTHON) -c "from minivar import data; (a, _), (b, _) = data.splits('fashion', 32); print('Fashion-MNIST ready:', len(a), 'train /', len(b), 'test')"

data-emoji: $(STAMP)
	@ls -d /usr/share/rubygems-integration/all/gems/gemojione-* >/dev/null 2>&1 || $(call APT_GET,ruby-gemojione) \
	  || { echo "could not install ruby-gemojione; pass --data-path DIR holding index.json and png/"; exit 1; }
	$(PYTHON) -c "from minivar import data; x, y = data.load('emoji', 32); print('emoji ready:', len(x), 'images,', int(y.max()) + 1, 'categories')"

# `clean` removes what the Makefile built, never a run; `clean-runs` removes every run under runs/
# (the demo's and your own), and only when asked for by name.
clean:
	rm -rf $(VENV) build *.egg-info

clean-runs:
	rm -rf runs
