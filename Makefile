# idlink: every target does its own set-up (virtual environment, install, build).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ./var/idlink
LISTEN ?= 127.0.0.1:50051
PYTEST_ARGS ?=

.PHONY: all build serve test test-pure test-browser browser-deps openapi lint lint-code lint-imports structure test-pure-core bench bench-smoke bench-deps crash-test load-test test-stress mutation clean

all: build

$(VENV)/.installed: pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The extensions are built in place below; the editable install only wires the package up.
	IDLINK_PURE_PYTHON=1 $(PY) -m pip install -q -e '.[test]'
	touch $@

# Generated protobuf modules and the compiled extensions, rebuilt when sources change.
.build-stamp: $(VENV)/.installed $(shell find protos cython_ext -name '*.proto' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' 2>/dev/null) setup.py
	@$(MAKE) --no-print-directory native-deps
	$(PY) -c "from setup import generate_protos; generate_protos()"
	$(PY) setup.py -q build_ext --inplace
	touch $@

build: .build-stamp

# OpenSSL's development files for the compiled bulk sealer (_bulk_c), installed where they
# are missing and we may (as root, with apt); elsewhere setup.py leaves that one module to
# its pure-Python twin and says so.
.PHONY: native-deps
native-deps:
	@if [ ! -e /usr/include/openssl/evp.h ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev; } \
				|| echo "could not install libssl-dev: the bulk sealer stays pure Python"; \
		else \
			echo "libssl-dev is missing: the bulk sealer stays pure Python"; \
		fi; \
	fi

serve: build
	$(VENV)/bin/idlink serve --data $(DATA) --listen $(LISTEN)

test: build browser-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-pure: build browser-deps
	IDLINK_PURE_PYTHON=1 $(PY) -m pytest $(PYTEST_ARGS)

# The console's browser tests (tests/console) drive Debian's headless Chromium
# with Selenium. The packages are installed where they are missing and we may
# (CI runs as root); elsewhere the tests are skipped and say why.
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
				|| echo "could not install chromium: the browser tests will be skipped"; \
		else \
			echo "chromium and chromium-driver are missing: the browser tests will be skipped"; \
		fi; \
	fi

test-browser: build browser-deps
	$(PY) -m pytest tests/console $(PYTEST_ARGS)

# docs/openapi.json after a change of the protos (tests/http checks it is current).
openapi: build
	$(PY) -m idlink.service.http.openapi > docs/openapi.json

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[bench]'
	touch $@

# The Redis peer of the look-up benchmarks (benchmarks/bench_redis.py) is Debian's
# redis-server, installed where it is missing and we may; the benchmark starts and stops
# its own on loopback. Elsewhere the Redis figures are skipped and say why.
bench-deps:
	@if ! command -v redis-server >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } \
				|| echo "could not install redis-server: the Redis figures will be skipped"; \
		else \
			echo "redis-server is missing: the Redis figures will be skipped"; \
		fi; \
	fi

bench: build $(VENV)/.bench-installed bench-deps
	$(PY) -m benchmarks.run

bench-smoke: build $(VENV)/.bench-installed bench-deps
	$(PY) -m benchmarks.run --smoke

# Growth to 10M records in one store (benchmarks/bench_scale.py; long, not in CI).
.PHONY: bench-scale
bench-scale: build $(VENV)/.bench-installed
	$(PY) -m benchmarks.bench_scale --sizes 100000,1000000,10000000

# Reliability runs (docs/operations.md): at least 20 kill -9 during ingest; a
# longer load run. Both print their figures.
KILLS ?= 20
LOAD_SECONDS ?= 60
crash-test: build
	$(PY) -m tests.reliability.crash --kills $(KILLS)
	$(PY) -m tests.reliability.crash_load --kills 10

load-test: build
	$(PY) -m tests.reliability.load --seconds $(LOAD_SECONDS)

# The isolation tests, STRESS_RUNS times, each a fresh pytest with its own server;
# stops at the first failure and says which run it was.
STRESS_RUNS ?= 50
test-stress: build
	@out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	for i in $$(seq 1 $(STRESS_RUNS)); do \
		$(PY) -m pytest -q -p no:cacheprovider tests/security/test_isolation.py >"$$out" 2>&1 \
			|| { cat "$$out"; echo "test-stress: run $$i of $(STRESS_RUNS) FAILED"; exit 1; }; \
		echo "test-stress: run $$i of $(STRESS_RUNS) passed"; \
	done; echo "test-stress: $(STRESS_RUNS) of $(STRESS_RUNS) runs passed"

# Mutation testing of domain/linking.py and domain/customers.py with mutmut, in a
# copy of the tree (docs/testing.md). JOBS, EXAMPLES, MUTANTS and MUTATION_DIR tune it.
mutation: build
	sh tests/mutation/run.sh

# ruff (lint and format), mypy, cython-lint and the import contracts of
# pyproject.toml ([tool.importlinter]: the layers and no cycles, docs/design.md).
$(VENV)/.dev-installed: $(VENV)/.installed
	IDLINK_PURE_PYTHON=1 $(PY) -m pip install -q -e '.[dev]'
	touch $@

lint: lint-code lint-imports

lint-code: build $(VENV)/.dev-installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/cython-lint --no-pycodestyle cython_ext/idlink/_native/*.pyx

lint-imports: build $(VENV)/.dev-installed
	$(VENV)/bin/lint-imports --no-cache

# The pure-Python twins alone (STYLE habit 2): the domain and native tests with
# IDLINK_PURE_PYTHON=1, the leg CI runs beside make test.
test-pure-core: build
	IDLINK_PURE_PYTHON=1 $(PY) -m pytest -q tests/domain tests/_native $(PYTEST_ARGS)

# The shape of the tree (docs/design.md, "Layers"): lines per module, the modules
# that open store transactions, the modules outside store/ that spell a key
# layout, and the import contracts (cycles, upward imports).
TXN_OPENERS := \.read\(\)|store\.write\(|\.write\(lambda|store\.submit
KEY_SPELLERS := b"[a-z_-]*:"
structure: build $(VENV)/.dev-installed
	@echo "== lines per module (src/idlink, generated code left out)"
	@find src/idlink -name '*.py' -not -path '*/v1/*' | xargs wc -l | sort -n | tail -n 25
	@echo "== modules that open store transactions"
	@grep -rlE "$(TXN_OPENERS)" src/idlink --include=*.py | sort
	@echo "total: $$(grep -rlE "$(TXN_OPENERS)" src/idlink --include=*.py | wc -l)"
	@echo "== modules outside store/ that spell a key layout"
	@grep -rlE '$(KEY_SPELLERS)' src/idlink --include=*.py | grep -v "/store/" | sort
	@echo "total: $$(grep -rlE '$(KEY_SPELLERS)' src/idlink --include=*.py | grep -v "/store/" | wc -l)"
	@echo "== import contracts"
	@$(VENV)/bin/lint-imports --no-cache || true

clean:
	rm -rf build .build-stamp src/idlink/v1 src/idlink/store/v1 .pytest_cache .hypothesis
	find src cython_ext -name '*.so' -o -name '*.c' -o -name '*.cpp' | xargs rm -f
