# The only two commands a new user needs: `make demo` and `make test`.
# Both create or reuse .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Pinned so that pip does not pull the multi-GB CUDA build on a CPU machine.
# On a GPU machine: make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" ...
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test install browser clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps "nnunetv2>=2.2,<3"  # see pyproject's test extra: its deps pin another torch
	$(PY) -m pip install --quiet -e ".[frd]" || echo "pyradiomics-bhklab did not build (a C compiler is needed): the frd feature space and its tests are skipped"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/synthmed demo --out demo_output

# The visual Turing test's browser tests drive Debian's chromium through Playwright (Playwright's own
# browser download is not needed). Installed with apt when missing; SKIP_BROWSER=1 skips this step.
browser:
	@if [ -n "$(SKIP_BROWSER)" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium; \
	else echo "chromium is missing: install it (apt-get install chromium) or pass SKIP_BROWSER=1"; exit 1; fi

test: $(STAMP) browser
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_output .pytest_cache
