# Two commands do all the set-up on a fresh machine:
#   make run    install, then fit + stack the default config on the default data folder
#   make test   install, then run the test suite (what CI runs)
DATA ?= $(or $(EMBEDENSEMBLE_DATA),../shared/data/kaggle-emotion)
RUN ?= artifacts/default
PY = .venv/bin/python

.PHONY: setup run test bench bench-quick
setup:
	./scripts/setup.sh

run: setup
	$(PY) -m embedensemble.fit --data $(DATA) --run $(RUN) --stack

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks.run

bench-quick: setup
	$(PY) -m benchmarks.run --quick
