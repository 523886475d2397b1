# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   train LeNet with DeepEyes watching (MNIST from ../shared/data if present)
#   make test   run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
MNIST  ?= $(wildcard ../shared/data/mnist.npz)
STEPS  ?= 2000

.PHONY: demo site serve test bench lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/deepeyes demo --steps $(STEPS) --run-name lenet-demo $(if $(MNIST),--mnist $(MNIST),)
	$(MAKE) site
	@echo "Open the viewer: $(BIN)/python -m http.server -d site 8000, then http://127.0.0.1:8000/deepeyes/"
	@echo "(or 'make serve' to watch runs live while training)"

site: $(VENV)/.installed
	$(BIN)/mkdocs build

serve: $(VENV)/.installed
	$(BIN)/mkdocs serve

test: $(VENV)/.installed
	DEEPEYES_MNIST=$(MNIST) $(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python bench/overhead.py --model all
	$(BIN)/python bench/blocking.py
	$(BIN)/python bench/embedding.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/run_size.py
	$(BIN)/python bench/busy.py
	$(BIN)/python bench/profile_fit.py
	$(BIN)/python bench/viewer.py

lint: $(VENV)/.installed
	$(BIN)/ruff check deepeyes_keras tests

clean:
	rm -rf $(VENV) site deepeyes_runs
