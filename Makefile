# Two commands matter: `make demo` (set up and run the main job) and
# `make test` (set up and pass the tests). Everything else is a building block.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA := deploy/local/kafka.sh
TOOLS := $(CURDIR)/.tools/bin
KUSTOMIZE_VERSION := v5.7.1
PYTEST_ARGS ?=
BENCH_ARGS ?=
DEMO_ARGS ?=

.PHONY: install tools demo test docs chaos bench bench-small-data bench-tutorial-split worker-requirements trainer-requirements lint format kafka-up kafka-down kafka-status clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=77"
	$(BIN)/pip install --quiet -e ".[train,test,dev,docs]"
	touch $(STAMP)

## install: create .venv with the worker, trainer, test and dev dependencies
install: $(STAMP)

## tools: kustomize (built from the Go module proxy), promtool (Debian's prometheus package) and
## headless Chromium (Debian's chromium package: the live page's test draws in it)
tools: $(TOOLS)/kustomize
	@command -v promtool >/dev/null || { \
	  echo "installing promtool (Debian package prometheus)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (Debian package)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq chromium >/dev/null; }

$(TOOLS)/kustomize:
	GOBIN=$(TOOLS) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

## demo: fresh clone → venv, model (trained once, then reused), local broker, worker, replayed feed, live numbers
# KAFKA_PORT=19092 make demo: the broker's port goes to the demo as a flag (the demo reads no environment).
demo: $(STAMP)
	$(BIN)/ecg-anomaly demo $(if $(KAFKA_PORT),--kafka-port $(KAFKA_PORT)) $(DEMO_ARGS)

## test: everything from a fresh clone (venv, broker jars, tools), the docs site (strict), then the whole suite
test: $(STAMP) tools
	$(KAFKA) fetch
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/pytest -m "not slow and not chaos" $(PYTEST_ARGS)

## docs: regenerate the reference fragments from the code (docs/generate.py), build the site into build/site
docs: $(STAMP)
	$(BIN)/python docs/generate.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## chaos: the full fault-injection suite (issue 7), one verdict line per scenario; about an hour
chaos: $(STAMP) tools
	$(KAFKA) fetch
	$(BIN)/pytest -m chaos -s $(PYTEST_ARGS)

## bench: kernel, worker vs passthrough ceiling vs naive Keras, scale-out, latency, memory, ready → bench-results/bench.json (BENCH_ARGS=--quick; --tls: throughput and latency over SASL_SSL too)
bench: $(STAMP)
	$(KAFKA) fetch
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)

## bench-small-data: default preset vs classical detectors on 10% training subsets (seeds 1-3) → bench-results/model-quality-small.{json,md}
bench-small-data: $(STAMP)
	$(BIN)/pytest -m slow -s tests/test_trainer_quality.py -k small_data $(PYTEST_ARGS)

## bench-tutorial-split: the same on the tutorial's split (seeds 1-3) → bench-results/model-quality-tutorial.{json,md}
bench-tutorial-split: $(STAMP)
	$(BIN)/pytest -m slow -s tests/test_trainer_quality.py -k tutorial_split $(PYTEST_ARGS)

## lint: ruff check and format check; the import layers (import-linter) on a built copy of the package
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf build/lint && $(BIN)/pip install --quiet --no-deps --no-build-isolation --target build/lint .
	cd build/lint && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports --config $(CURDIR)/pyproject.toml

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## kafka-up / kafka-down: the local single-node broker on 127.0.0.1:$${KAFKA_PORT:-9092}
kafka-up:
	$(KAFKA) up

kafka-down:
	$(KAFKA) down

kafka-status:
	$(KAFKA) status

## worker-requirements: re-pin the worker image's dependencies (a fresh venv, pip install ., pip freeze)
worker-requirements:
	rm -rf /tmp/ecg-worker-pins && $(PYTHON) -m venv /tmp/ecg-worker-pins
	/tmp/ecg-worker-pins/bin/pip install --quiet .
	{ echo "# Pinned runtime dependencies of the worker image (no TensorFlow)."; \
	  echo "# Regenerate: make worker-requirements  (a fresh venv, pip install ., pip freeze)"; \
	  /tmp/ecg-worker-pins/bin/pip freeze --exclude ecg-anomaly; } > deploy/docker/worker-requirements.txt

## trainer-requirements: re-pin the trainer image's dependencies (pip's resolution of '.[train]', not installed)
trainer-requirements: $(STAMP)
	$(BIN)/pip install --dry-run --quiet --ignore-installed --report build/trainer-pins.json ".[train]"
	{ echo "# Pinned dependencies of the trainer image: pip's resolution of '.[train]' (ecg-anomaly itself excluded)."; \
	  echo "# Regenerate: make trainer-requirements"; \
	  $(BIN)/python -c 'import json, sys; r = json.load(open(sys.argv[1]))["install"]; print("\n".join(sorted((p["metadata"]["name"] + "==" + p["metadata"]["version"] for p in r if p["metadata"]["name"] != "ecg-anomaly"), key=str.lower)))' build/trainer-pins.json; \
	} > deploy/docker/trainer-requirements.txt

## report-screenshot: render $(REPORT) in headless Chromium to report.png beside it (apt-get installs chromium if missing)
REPORT ?= artifacts/report.html
SCREENSHOT_SIZE ?= 1200,4200
.PHONY: report-screenshot
report-screenshot:
	@test -f $(REPORT) || { echo "no $(REPORT): run '$(BIN)/ecg-anomaly train' first" >&2; exit 1; }
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (Debian package)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq chromium >/dev/null; }
	profile=$$(mktemp -d) && trap 'rm -rf "$$profile"' EXIT && \
	  chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
	    --disable-component-update --disable-sync --no-first-run --user-data-dir="$$profile" \
	    --screenshot="$(abspath $(dir $(REPORT)))/report.png" --window-size=$(SCREENSHOT_SIZE) \
	    "file://$(abspath $(REPORT))"

clean:
	rm -rf $(VENV) .tools build *.egg-info .pytest_cache .ruff_cache
