# The README's commands. `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
# The CPU build of PyTorch that pip finds on local disk here; elsewhere pip resolves torch>=2.4.
TORCH ?= torch==2.13.0
CORES ?= all
EXPERIMENT ?=
SWEEP ?=
# workflow/profiles/NAME: local, or slurm (sbatch jobs: the README's "Run on a cluster")
PROFILE ?= local
SNAKE_CONFIG := $(if $(EXPERIMENT),experiment=$(EXPERIMENT)) $(if $(SWEEP),sweep=$(SWEEP))

.PHONY: run test test-fast test-kernels test-slurm sweep dag report clean install

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" || $(PY) -m pip install --quiet "torch>=2.4"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## run the whole DAG on the built-in corpus (make run EXPERIMENT=ci for the tiny recipe)
run: install
	$(SNAKEMAKE) -c $(CORES) --profile workflow/profiles/$(PROFILE) $(if $(strip $(SNAKE_CONFIG)),--config $(SNAKE_CONFIG))
	@echo "report: results/report/index.html"

## a sweep: make sweep SWEEP=conf/sweep/collect_size.yaml
sweep: install
	test -n "$(SWEEP)" || { echo "usage: make sweep SWEEP=conf/sweep/NAME.yaml"; exit 2; }
	$(SNAKEMAKE) -c $(CORES) --profile workflow/profiles/$(PROFILE) --config $(SNAKE_CONFIG)

## the test suite
test: install
	$(PY) -m pytest -q

## a real one-node Slurm cluster on this machine runs the ci experiment through the slurm
## profile (installs slurm-wlm, munge, slurmdbd, mariadb-server when missing: needs root)
test-slurm: install
	bash workflow/slurm/install.sh
	LMDAG_SLURM_TEST=1 $(PY) -m pytest -q tests/slurm

## Triton kernels on the CPU interpreter, slow tests included (part of `make test` too)
test-kernels: install
	$(PY) -m pytest -q tests/kernels

test-fast: install
	$(PY) -m pytest -q -m "not slow"

## the DAG as a picture (mermaid, rendered by GitHub; linked from the README)
dag: install
	{ echo '# The lmdag DAG'; echo; echo 'Regenerate with `make dag` (`snakemake --rulegraph mermaid-js`).'; echo; \
	  echo '```mermaid'; $(SNAKEMAKE) -c 1 --quiet all --rulegraph mermaid-js --config experiment=ci; echo '```'; } > docs/rulegraph.md

clean:
	rm -rf results .snakemake
