# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   train LeNet with DeepEyes watching (MNIST from ../shared/data if present)
#   make test   run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
MNIST  ?= $(wildcard ../shared/data/mnist.npz)
STEPS  ?= 2000

.PHONY: demo test lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/deepeyes demo --steps $(STEPS) $(if $(MNIST),--mnist $(MNIST),)

test: $(VENV)/.installed
	DEEPEYES_MNIST=$(MNIST) $(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check deepeyes_keras tests

clean:
	rm -rf $(VENV) site deepeyes_runs
