# The README's two Quickstart commands are `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: install install-test demo test test-fast build-file

install:
	$(PIP) -e .

# torch is pinned in the same requirement set as transformers/trl (see setup.py).
install-test:
	$(PIP) -e '.[test]'

demo: install
	$(PYTHON) -m citrus_jax.main --config=configs/demo.py

test: install-test
	$(PYTHON) -m pytest tests

test-fast: install-test
	$(PYTHON) -m pytest tests -m "not slow"

build-file:
	$(PYTHON) tools/gen_build.py > BUILD
