# twinspect — every target works on a fresh machine with Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   := data/line
RUN    := runs/default
MODEL  := models/default

.PHONY: deps install demo test lint format generate train export replay eval bench bench-surface bench-runtime soak edge-check clean

install: $(STAMP)

# System packages the tests need (Debian's; run as root, as CI does, or prefix with sudo):
# Mosquitto, the MQTT broker tests/test_sinks.py starts on a free localhost port, and Chromium
# with its chromedriver, the real headless browser tests/test_serve.py drives the station page
# with (selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver: nothing downloads a
# browser).
DEB_DEPS := mosquitto chromium chromium-driver

deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	if [ -z "$$missing" ]; then \
	  echo "deps: $(DEB_DEPS) are installed"; \
	else \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev,line,page]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The default production line: generated, deterministic by seed, nothing downloaded.
$(DATA)/.complete: $(STAMP)
	$(BIN)/twinspect generate --out $(DATA)
	touch $@

generate: $(DATA)/.complete

# Train the twin network on the default line: RUN holds the models, reference, report and plots.
$(RUN)/reference.json: $(DATA)/.complete
	$(BIN)/twinspect train --data $(DATA) --out $(RUN)

train: $(RUN)/reference.json

# Ship only the embedding branch: model.onnx + model.json, verified against Keras first.
$(MODEL)/model.json: $(RUN)/reference.json
	$(BIN)/twinspect export --run $(RUN) --out $(MODEL)

export: $(MODEL)/model.json

# Judge the recorded line with the edge runtime alone, then score it against its labels.
replay: $(MODEL)/model.json
	@mkdir -p results
	rm -f results/replay.jsonl
	$(BIN)/twinspect run --model $(MODEL) --source $(DATA)/recording --out results/replay.jsonl
	$(BIN)/twinspect eval --model $(MODEL) --data $(DATA)/recording --json results/eval-recording.json

eval: $(MODEL)/model.json
	@mkdir -p results
	$(BIN)/twinspect eval --model $(MODEL) --data $(DATA) --split test --json results/eval-test.json

# The runtime alone, on the default model: per-stage latency, throughput, load time, RSS, Keras ratio.
bench-runtime: $(MODEL)/model.json
	@mkdir -p results
	$(BIN)/twinspect bench --model $(MODEL) --data $(DATA)/recording --run $(RUN) --json results/bench.json

# The evidence: every method side by side, unseen defects, difficulty sweep, speed, footprint.
# Generates its own data, trains its own models (~20 min on 2 cores), writes BENCHMARKS.md.
bench: $(STAMP)
	$(BIN)/python -m train.evidence --out BENCHMARKS.md

# The real-surface evidence: the generated tile product, default commands, 5 training seeds, the
# pixel baselines beside them, calibration stability and speed at the auto input size. Writes
# the "Real-surface product" section of BENCHMARKS.md (about an hour on 2 cores).
bench-surface: $(STAMP)
	$(BIN)/python -m train.evidence_surface --out BENCHMARKS.md

# The line under faults, a benchmark (not part of `make test`): a station of live MJPEG cameras
# sending every verdict to a local Mosquitto and a pymodbus PLC while the broker is killed, the
# PLC stopped and a camera unplugged, in turn; prints parts judged, records lost (must be 0),
# late verdicts, capture → decision p50/p99 and RSS, and writes the soak section of
# BENCHMARKS.md. Needs mosquitto (`make deps`). About 6 minutes with the defaults.
SOAK_ARGS ?= --cameras 3 --minutes 5
soak: $(MODEL)/model.json
	$(BIN)/python -m edge_runtime.soak --model $(MODEL) $(SOAK_ARGS) --markdown BENCHMARKS.md

demo: replay eval
	@echo "demo done: data $(DATA), run $(RUN) (report + plots), model $(MODEL), results in results/"

# A line PC's install: base dependencies only (no TensorFlow), judging the default recording.
EDGE := .venv-edge
edge-check: $(MODEL)/model.json
	rm -rf $(EDGE) && $(PYTHON) -m venv $(EDGE)
	$(EDGE)/bin/python -m pip install --quiet --upgrade pip
	$(EDGE)/bin/python -m pip install --quiet .
	@if $(EDGE)/bin/python -c "import tensorflow" 2>/dev/null; then echo "edge-check: TensorFlow is in the edge install"; exit 1; fi
	$(EDGE)/bin/twinspect --help > /dev/null
	$(EDGE)/bin/twinspect run --model $(MODEL) --source $(DATA)/recording --out /dev/null
	@$(EDGE)/bin/twinspect run --model $(MODEL) --source $(DATA)/recording --out /dev/null \
	  --metrics-port 0 2>$(EDGE)/metrics.err; rc=$$?; \
	  if [ $$rc -ne 2 ] || ! grep -q "'line' extra" $(EDGE)/metrics.err; then \
	    echo "edge-check: --metrics-port without the line extra exited $$rc, expected 2 naming it"; exit 1; fi
	@$(EDGE)/bin/twinspect serve --model $(MODEL) --source $(DATA)/recording \
	  --out $(EDGE)/serve.jsonl --port 0 2>$(EDGE)/serve.err; rc=$$?; \
	  if [ $$rc -ne 2 ] || ! grep -q "'page' extra" $(EDGE)/serve.err; then \
	    echo "edge-check: serve without the page extra exited $$rc, expected 2 naming it"; exit 1; fi
	$(EDGE)/bin/twinspect eval --model $(MODEL) --data $(DATA)/recording
	@$(EDGE)/bin/twinspect train --data $(DATA) --out $(EDGE)/run; rc=$$?; \
	  if [ $$rc -ne 2 ]; then echo "edge-check: train without TensorFlow exited $$rc, expected 2"; exit 1; fi
	@echo "edge-check: the base install judges parts without TensorFlow"

clean:
	rm -rf data runs models results .venv-edge
