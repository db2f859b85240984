# edgekit: the two commands of the README, and their parts.
#   make demo   set everything up, compile the bundled digits-cnn for cortex-m7 (int8), run it on the emulated board
#   make test   set everything up (if needed) and run the test suite
PY := .venv/bin/python
EDGEKIT := .venv/bin/edgekit

.PHONY: setup demo test bench clean

setup:
	@scripts/setup.sh

demo: setup
	$(EDGEKIT) compile digits-cnn --target cortex-m7 --quantize int8 -o build/demo --force
	$(EDGEKIT) profile build/demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf build .pytest_cache
