# The two commands of the README's Quick start: `make demo` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
CORES ?= 2
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test report lint clean gpu-wheels gpu-check

$(PYTHON):
	python3 -m venv $(VENV)

$(INSTALLED): pyproject.toml constraints.txt | $(PYTHON)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet --constraint constraints.txt --editable '.[pipeline,dev]'
	touch $@

## demo: run the whole pipeline on the bundled demo (config.yaml), then write its report
demo: $(INSTALLED)
	$(VENV)/bin/snakemake --cores $(CORES)
	$(VENV)/bin/snakemake --cores $(CORES) --report report.html

## test: install and run the test suite
test: $(INSTALLED)
	$(PYTHON) -m pytest --durations=15

## gpu-wheels: fetch here (network) what the offline GPU machine lacks, into .gpu-check/
gpu-wheels: $(INSTALLED)
	$(PYTHON) benchmarks/gpu_wheels.py

## gpu-check: the prepared GPU check into GPU_OUT (GPU_MODE=--cpu: tiny sizes on the CPU)
GPU_OUT ?= benchmarks/out/gpu-check
GPU_MODE ?=
gpu-check:
	bash benchmarks/gpu_check.sh $(GPU_OUT) $(GPU_MODE)

## report: the Snakemake report of the last run, as one HTML file and as a zip archive
report: $(INSTALLED)
	$(VENV)/bin/snakemake --cores $(CORES) --report report.html
	$(VENV)/bin/snakemake --cores $(CORES) --report report.zip

## lint: the quality gates alone
lint: $(INSTALLED)
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check Snakefile workflow/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check copra tests benchmarks

clean:
	rm -rf results logs resources .snakemake report.html
