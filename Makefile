# tetrahost build.  `make build` = venv + cffi extension + BPF objects.
PY        ?= .venv/bin/python
CLANG     ?= clang
ARCH      ?= x86
BPF_SRC   := $(wildcard csrc/bpf/*.bpf.c)
BPF_OBJ   := $(patsubst csrc/bpf/%.bpf.c,build/bpf/%.bpf.o,$(BPF_SRC))
BPF_HDRS  := $(wildcard csrc/bpf/lib/*.h) csrc/events.h
EXT       := tetrahost/_libbpf.abi3.so
BPF_FLAGS := -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_$(ARCH) \
             -Icsrc/include/$(ARCH) -Icsrc

.PHONY: all build bpf ext venv constants deps run test test-host test-vm test-vm-matrix test-vm-systemd test-vm-kernel-all bench clean vmlinux

all: build
build: venv constants ext bpf

deps:                         ## apt packages (Debian 12), as root: build, tests, packaging
	scripts/install-deps.sh
	scripts/install-packaging-deps.sh

venv: .venv/.installed
.venv/.installed: pyproject.toml setup.py
	test -x $(PY) || /usr/bin/python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip wheel setuptools cffi
	$(PY) -m pip install -q --no-build-isolation -e '.[test,journald,fast]'
	touch $@

constants: tetrahost/constants.py      ## the events.h enums for pure Python (the policy front end)
tetrahost/constants.py: csrc/events.h csrc/gen_constants.py
	$(PY) csrc/gen_constants.py

ext: $(EXT)
$(EXT): csrc/events.h csrc/libbpf.cdef csrc/shim.c csrc/ring.c csrc/ring.cdef csrc/build_ffi.py .venv/.installed
	$(PY) setup.py -q build_ext --inplace
	touch $@

bpf: $(BPF_OBJ)
build/bpf/%.bpf.o: csrc/bpf/%.bpf.c $(BPF_HDRS)
	@mkdir -p build/bpf
	$(CLANG) $(BPF_FLAGS) -c $< -o $@

vmlinux:                      ## regenerate the committed vmlinux.h from this kernel's BTF
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > csrc/include/$(ARCH)/vmlinux.h

run: build                    ## the agent in the foreground: compact events on stdout, JSON in /var/log/tetragon, `tetra` works
	$(PY) -m tetrahost.cli.main run --stdout --stdout-format compact --policy-dir /etc/tetragon/policies.d \
		--socket /run/tetrahost/tetrahost.sock

test: build                   ## everything CI runs: host suite, kernel matrix, systemd guests, packages, side by side (scripts/ci_lanes.py)
	bash scripts/vm-setup.sh
	scripts/install-packaging-deps.sh
	$(PY) scripts/ci_lanes.py

test-host: build              ## unit tests + this kernel (root); fails on a skip that is not "not applicable here"
	TETRAHOST_STRICT_SKIPS=1 $(PY) -m pytest -q -rs tests --ignore=tests/packaging   # those: test-packaging, after building

test-vm: build                ## tests/vm inside Debian's 6.1 kernel under QEMU
	bash scripts/vm-setup.sh
	$(PY) tests/vm/run.py --vm-results "$(CURDIR)/build/vm-results"

test-vm-matrix: build         ## one boot per kernel: 6.1 and 6.12 full, 6.1 without BPF-LSM and 6.1-rt lean
	bash scripts/vm-setup.sh
	$(PY) tests/vm/matrix.py --results "$(CURDIR)/build/vm-matrix" --doc "$(CURDIR)/build/vm-matrix/kernel-matrix.md"

KERNEL ?= 6.12
test-vm-kernel-all: build     ## all of tests/kernel in one guest (KERNEL=6.1|6.12): about 30 min under emulation, not in CI
	bash scripts/vm-setup.sh
	$(PY) tests/vm/run.py --kernel $(KERNEL) --suite kernel --vm-timeout 14400 \
		--vm-results "$(CURDIR)/build/vm-kernel-all-$(KERNEL)"

test-vm-systemd: build        ## scenarios under systemd + journald in the guest: the unit, central journals
	bash scripts/vm-setup.sh
	$(PY) tests/vm/run.py --systemd tests/vm/scenarios/systemd_smoke.sh
	$(PY) tests/vm/run.py --systemd tests/vm/scenarios/journal_remote.sh

bench: build
	$(PY) bench/exec_storm.py

clean:
	rm -rf build $(EXT) tetrahost/*.so

include packaging/packaging.mk
