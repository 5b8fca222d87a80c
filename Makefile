# The two commands of the README's Quick start: `make demo` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
CORES ?= 2
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test report lint clean

$(PYTHON):
	python3 -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet --editable '.[pipeline,dev]'
	touch $@

## demo: run the whole pipeline on the bundled demo (config.yaml)
demo: $(INSTALLED)
	$(VENV)/bin/snakemake --cores $(CORES)

## test: install and run the test suite
test: $(INSTALLED)
	$(PYTHON) -m pytest

## report: the Snakemake HTML report of the last run
report: $(INSTALLED)
	$(VENV)/bin/snakemake --cores $(CORES) --report report.html

## lint: the quality gates alone
lint: $(INSTALLED)
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check Snakefile workflow/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check copra tests benchmarks

clean:
	rm -rf results logs resources .snakemake report.html
