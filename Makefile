# squall: the commands a developer needs.
#   make test    bootstrap, build everything with ASan+UBSan, run every C and Python test
#   make demo    bootstrap, build, start a local cluster, run examples/ (Python client issue)
#   make bench   run every benchmark in bench/ (bench/run NAME for one)
#   make fuzz    build the libFuzzer targets with clang and run each for FUZZ_SECONDS
#                (default 5: a ~4 min smoke run of all 37 targets; FUZZ_SECONDS=300 to hunt)
#   make build   release build of the daemons into build/release
SHELL := /bin/bash
JOBS ?= $(shell nproc)
VENV := .venv
PY := $(VENV)/bin/python
ASAN_DIR := build/asan
REL_DIR := build/release
FUZZ_DIR := build/fuzz
# Seconds per fuzz target. The corpus in build/fuzz/corpus persists, so short runs
# add up; 37 targets x 5 s keep `make fuzz` near 4 minutes (it was 19 at 30 s).
FUZZ_SECONDS ?= 5
EXTRAS ?= test
CMAKE_GEN := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")
# Executors embed the interpreter of the project's virtualenv, so that functions see
# the packages installed there (squall itself, numpy, cloudpickle, ...).
CMAKE_PY := -DPython_EXECUTABLE=$(CURDIR)/$(VENV)/bin/python

# Sanitizer settings for every test process: stop at the first error, print stacks.
export ASAN_OPTIONS ?= abort_on_error=0:halt_on_error=1:detect_leaks=1
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1

.PHONY: bootstrap build build-asan test test-c test-python pyinstall demo bench fuzz clean

bootstrap:
	@scripts/bootstrap $(EXTRAS)

build: bootstrap
	cmake -S . -B $(REL_DIR) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release -DSQUALL_TESTS=OFF -DSQUALL_PYEXT=OFF $(CMAKE_PY) >/dev/null
	cmake --build $(REL_DIR) -j $(JOBS)

build-asan: bootstrap
	cmake -S . -B $(ASAN_DIR) $(CMAKE_GEN) -DSQUALL_SANITIZE=ON -DSQUALL_PYEXT=OFF $(CMAKE_PY) >/dev/null
	cmake --build $(ASAN_DIR) -j $(JOBS)

# The Python package (daemons + _squall), built without sanitizers into .venv;
# build/py keeps CMake's state so a second install only recompiles what changed.
pyinstall: bootstrap
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
	  -Cbuild-dir=build/py .

test-c: build-asan
	ctest --test-dir $(ASAN_DIR) --output-on-failure -j $(JOBS)

# Python end-to-end tests run the sanitizer-built daemons (SQUALL_BIN_DIR) so that a
# memory error or a leak in a daemon fails the run: every daemon (kvs, cache,
# scheduler, worker supervisor and executors) runs with LeakSanitizer on, no exception.
# A daemon that leaks prints LSan's report into its log and exits 1 instead of its own
# code; the tests that check exit codes then fail (an executor's "departed" code 3
# becomes 1 only when it leaked). The embedded interpreter is never finalised, by
# design: what it and the extension modules it loads keep is suppressed in
# worker/exec_main.c (__lsan_default_suppressions), where the reasons are written.
test-python: build-asan pyinstall
	SQUALL_BIN_DIR=$(CURDIR)/$(ASAN_DIR)/bin $(PY) -m pytest tests/python

test: test-c test-python

bench: EXTRAS = test,bench
bench: bootstrap build pyinstall
	bench/run all

fuzz: bootstrap
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) $(CMAKE_GEN) -DSQUALL_FUZZ=ON -DSQUALL_TESTS=OFF -DSQUALL_PYEXT=OFF >/dev/null
	cmake --build $(FUZZ_DIR) -j $(JOBS)
	@set -e; for f in $(FUZZ_DIR)/tests/fuzz/fuzz_*; do \
	  [ -x "$$f" ] || continue; name=$$(basename $$f); \
	  mkdir -p $(FUZZ_DIR)/corpus/$$name; \
	  echo "fuzz: $$name for $(FUZZ_SECONDS)s"; \
	  "$$f" -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 \
	    $(FUZZ_DIR)/corpus/$$name tests/fuzz/seeds/$$name 2>&1 | tail -n 3; \
	done

demo: bootstrap pyinstall
	@if [ -x examples/run_demo ]; then examples/run_demo; else \
	  echo "make demo: the local cluster and examples/ arrive with the Python client (issue 6)."; exit 1; fi

clean:
	rm -rf build
