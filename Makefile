# twinspect — every target works on a fresh machine with Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   := data/line
RUN    := runs/default
MODEL  := models/default

.PHONY: install demo test lint format generate train export replay eval bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
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

demo: $(DATA)/.complete
	@echo "demo: generated the default line in $(DATA) (see $(DATA)/preview.png)"

clean:
	rm -rf data runs models results
