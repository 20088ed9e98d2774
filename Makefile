# The two commands: `make run` (main job on the embedded synthetic data) and `make test`.
# Both create the pinned environment in .venv first if it is missing or stale.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: env run test test-fast bench clean
env:
	@bash scripts/setup_env.sh

run: env
	$(PY) -m ytspark.cli pipeline $(ARGS)

test: env
	$(PY) -m pytest -q -rs --durations=15 $(PYTEST_ARGS)

# Local iteration: everything but the cluster, Horovod and fuzz tests (`make test` still runs all of them).
test-fast: env
	$(PY) -m pytest -q -rs --durations=10 -m "not cluster and not horovod and not fuzz" $(PYTEST_ARGS)

bench: env
	$(PY) bench/prepare.py

clean:
	rm -rf out .pytest_cache spark-warehouse
