# qrux: the two set-up commands of the README, and helpers around CMake.
#
#   make run     deps, build, then the demo (scripts/run-demo.sh);
#                QRUX_CONFIG=path make run runs that config instead
#   make test    deps, build, then every unit and e2e test through ctest; then
#                the sanitizer tree (build-san: clang, address+undefined, the
#                libFuzzer targets): its unit tests, the e2e files of SAN_E2E
#                against the sanitized binary, and each fuzz target for
#                FUZZ_SECS (30) seconds
#   make fuzz    the sanitizer tree, then each fuzz target for FUZZ_LONG_SECS
#                (600) seconds or FUZZ_RUNS executions, one after the other
#   make build   deps and build only; CMAKE_ARGS="-DQRUX_WERROR=ON ..." passes through
#   make clean   removes build/
#   make format  clang-format -i on the C sources
#   make bench   deps, build, then bench/run.py: qrux next to Caddy and nginx
#                (a few minutes; not part of `make test`); BENCH_ARGS passes through
#
# .ci/run calls `make test`; keep the README, .ci/run and this file in step.

BUILD_DIR := build
SAN_DIR := build-san
# The e2e files that run a second time against the sanitizer build (about
# 2x slower there): the request, error, HTTP/2 and attack paths and the
# admin server, and the WebSocket tunnels and gRPC (h2c, trailers). The
# others run in the main tree only: test_https (testssl.sh
# alone takes minutes), test_streaming and test_quic (large and lossy
# transfers), test_quic_transport (timing-heavy), test_chromium,
# test_reload, test_drain and test_lifecycle (process lifecycle).
SAN_E2E := test_proxy_basic;test_errors;test_malformed;test_h2_conformance;test_attacks_h2;test_routing;test_admin;test_attacks_quic;test_attacks_admin;test_websocket;test_grpc
FUZZ_SECS ?= 30
FUZZ_LONG_SECS ?= 600
FUZZ_RUNS ?= 10000000
CMAKE_ARGS ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FORMAT_DIRS := proxy config admin unit bpf bench fuzz
# CMake's own make runs as a fresh top-level make: -j$(JOBS) is explicit, and
# without this it would print "Entering directory" around every step.
FRESH := env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL

.PHONY: all deps build build-san run test fuzz clean format bench

# Which dependency set scripts/deps.sh installs (build, run, test, bench): the
# target's own; target-specific values reach the deps prerequisite.
DEPS_SET ?= build
run: DEPS_SET = run
test: DEPS_SET = test
build-san: DEPS_SET = test
fuzz: DEPS_SET = test
bench: DEPS_SET = bench

all: build

# The test set also unpacks bookworm-backports' libcurl 8.14 (HTTP/3, for
# e2e/test_curl_h3.py) into $(BUILD_DIR)/backports and brings the Kubernetes
# test tools (helm, kubectl, validators) into $(BUILD_DIR)/k8s-tools from
# e2e/k8s/package-lock.json; both fast when done.
deps:
	@scripts/deps.sh $(DEPS_SET) $(BUILD_DIR)
	@case "$(DEPS_SET)" in test|bench) scripts/k8s-tools.sh $(BUILD_DIR) ;; esac

build: deps
	@echo "+ cmake -S . -B $(BUILD_DIR) $(CMAKE_ARGS)"
	@$(FRESH) cmake -S . -B $(BUILD_DIR) $(CMAKE_ARGS)
	@echo "+ cmake --build $(BUILD_DIR) -j$(JOBS)"
	@$(FRESH) cmake --build $(BUILD_DIR) -j$(JOBS)

run: build
	@scripts/run-demo.sh

build-san: deps
	@echo "+ cmake -S . -B $(SAN_DIR) -DCMAKE_C_COMPILER=clang -DQRUX_SANITIZE=address,undefined -DQRUX_FUZZ=ON"
	@$(FRESH) cmake -S . -B $(SAN_DIR) -DCMAKE_C_COMPILER=clang -DQRUX_SANITIZE=address,undefined \
		-DQRUX_FUZZ=ON -DQRUX_FUZZ_SECS=$(FUZZ_SECS) "-DQRUX_E2E_ONLY=$(SAN_E2E)"
	@echo "+ cmake --build $(SAN_DIR) -j$(JOBS)"
	@$(FRESH) cmake --build $(SAN_DIR) -j$(JOBS)

test: build build-san
	@echo "+ ctest --test-dir $(BUILD_DIR) --output-on-failure --no-tests=error -j$(JOBS)"
	@$(FRESH) ctest --test-dir $(BUILD_DIR) --output-on-failure --no-tests=error -j$(JOBS)
	@echo "+ ctest --test-dir $(SAN_DIR) --output-on-failure --no-tests=error -j$(JOBS)"
	@$(FRESH) ctest --test-dir $(SAN_DIR) --output-on-failure --no-tests=error -j$(JOBS)

fuzz: build-san
	@mkdir -p $(SAN_DIR)/fuzz-out
	@for t in $(SAN_DIR)/fuzz_*; do \
		n=$$(basename $$t); \
		echo "+ fuzz/run.sh $$t $(FUZZ_LONG_SECS) -runs=$(FUZZ_RUNS)"; \
		rc=0; fuzz/run.sh $$t $(FUZZ_LONG_SECS) -runs=$(FUZZ_RUNS) \
			> $(SAN_DIR)/fuzz-out/$$n.log 2>&1 || rc=$$?; \
		grep -E '^(stat::number_of_executed_units|Done|==[0-9]+== ERROR|SUMMARY)' \
			$(SAN_DIR)/fuzz-out/$$n.log || true; \
		if [ $$rc -ne 0 ]; then tail -60 $(SAN_DIR)/fuzz-out/$$n.log; exit 1; fi; \
	done

clean:
	rm -rf $(BUILD_DIR) $(SAN_DIR)

format:
	@files=$$(find $(FORMAT_DIRS) -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null); \
	if [ -n "$$files" ]; then clang-format -i $$files; fi
