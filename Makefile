# qrux: the two set-up commands of the README, and helpers around CMake.
#
#   make run     deps, build, then the demo (scripts/run-demo.sh);
#                QRUX_CONFIG=path make run runs that config instead
#   make test    deps, build, then every unit and e2e test through ctest
#   make build   deps and build only; CMAKE_ARGS="-DQRUX_WERROR=ON ..." passes through
#   make clean   removes build/
#   make format  clang-format -i on the C sources
#   make bench   deps, build, then bench/run.py: qrux next to Caddy and nginx
#                (a few minutes; not part of `make test`); BENCH_ARGS passes through
#
# .ci/run calls `make test`; keep the README, .ci/run and this file in step.

BUILD_DIR := build
CMAKE_ARGS ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FORMAT_DIRS := proxy config admin unit bpf bench
# CMake's own make runs as a fresh top-level make: -j$(JOBS) is explicit, and
# without this it would print "Entering directory" around every step.
FRESH := env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL

.PHONY: all deps build run test clean format bench

# Which dependency set scripts/deps.sh installs (build, run, test, bench): the
# target's own; target-specific values reach the deps prerequisite.
DEPS_SET ?= build
run: DEPS_SET = run
test: DEPS_SET = test
bench: DEPS_SET = bench

all: build

# The test set also brings the Kubernetes test tools (helm, kubectl, validators)
# into $(BUILD_DIR)/k8s-tools from e2e/k8s/package-lock.json; fast when done.
deps:
	@scripts/deps.sh $(DEPS_SET)
	@case "$(DEPS_SET)" in test|bench) scripts/k8s-tools.sh $(BUILD_DIR) ;; esac

build: deps
	@echo "+ cmake -S . -B $(BUILD_DIR) $(CMAKE_ARGS)"
	@$(FRESH) cmake -S . -B $(BUILD_DIR) $(CMAKE_ARGS)
	@echo "+ cmake --build $(BUILD_DIR) -j$(JOBS)"
	@$(FRESH) cmake --build $(BUILD_DIR) -j$(JOBS)

run: build
	@scripts/run-demo.sh

test: build
	@echo "+ ctest --test-dir $(BUILD_DIR) --output-on-failure --no-tests=error -j$(JOBS)"
	@$(FRESH) ctest --test-dir $(BUILD_DIR) --output-on-failure --no-tests=error -j$(JOBS)

bench: build
	@echo "+ bench/run.py --build $(BUILD_DIR) $(BENCH_ARGS)"
	@python3 bench/run.py --build $(BUILD_DIR) $(BENCH_ARGS)

clean:
	rm -rf $(BUILD_DIR)

format:
	@files=$$(find $(FORMAT_DIRS) -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null); \
	if [ -n "$$files" ]; then clang-format -i $$files; fi
