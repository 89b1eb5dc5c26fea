#!/bin/sh
# Guest side of a plain tests/vm/run.py run (the command virtme-ng executes
# after booting the Debian 6.1 kernel).
#
# Usage: run_pytest.sh RESULTS_DIR REPO DEADLINE KERNEL TESTS [pytest args...]
# KERNEL: the matrix entry booted (6.1, 6.12, 6.1-rt...; TETRAHOST_VM_KERNEL for
# the tests). TESTS: colon-separated paths under REPO (tests/vm, tests/kernel,
# or files); paths under tests/vm run with `-m vm`.
# RESULTS_DIR is the host directory shared read-write with the guest: the host
# reads exit_code, junit.xml and dmesg.txt from it after the guest powers off.
# DEADLINE (seconds): a pytest still running then is stopped by the watchdog
# below, after it has dumped where everything was stuck (kernel and Python).
set -u
results=$1
repo=$2
deadline=$3
export TETRAHOST_VM_KERNEL=$4
tests=$5
shift 5

echo "tetrahost-vm: guest up, kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s"

# BPF tests need these file systems; virtme-ng mounts some of them, not all
# (bpffs is missing), so mount whatever is not there yet.
mount_fs() {  # fstype target
    mountpoint -q "$2" && return 0
    mkdir -p "$2" && mount -t "$1" "$1" "$2" || echo "tetrahost-vm: cannot mount $1 on $2" >&2
}
mount_fs tracefs /sys/kernel/tracing
mount_fs securityfs /sys/kernel/security
mount_fs bpf /sys/fs/bpf
mount_fs debugfs /sys/kernel/debug

export TETRAHOST_IN_VM=1
# a skip other than "not applicable on this kernel" fails the run (tests/conftest.py)
export TETRAHOST_STRICT_SKIPS=1
# The checkout is on the read-only host root: keep Python from trying to write .pyc files.
export PYTHONDONTWRITEBYTECODE=1
cd "$repo" || exit 1

# What a stalled run needs to be understood (a run that never ends leaves
# nothing else): the busiest processes, and the kernel stacks of the blocked
# ones.  Never the stack of a running task: unwinding a task that runs on
# another CPU through a kretprobe's return trampoline makes 6.1 log a WARNING
# (rethook_find_ret_addr), which fails the run; the deadline's sysrq-l shows
# what the CPUs are running instead.
snapshot() {
    echo "== uptime $(cut -d' ' -f1 /proc/uptime) s, load $(cut -d' ' -f1-4 /proc/loadavg)"
    grep -E '^(MemTotal|MemAvailable|Slab|SUnreclaim|Percpu|VmallocUsed):' /proc/meminfo | tr -s ' ' | paste -sd' '
    ps -eo pid,ppid,stat,pcpu,rss,wchan:28,etime,args --sort=-pcpu | head -n 25
    for pid in $(ps -eo pid=,stat= | awk '$2 ~ /^D/ {print $1}'); do
        echo "== kernel stack of blocked $pid ($(cat /proc/$pid/comm 2>/dev/null))"
        cat /proc/$pid/stack 2>/dev/null
    done
}

# Every 20 s: the latest snapshot (overwritten) and dmesg into the results.
# At the deadline: kernel backtraces (sysrq: blocked tasks, every CPU) into
# dmesg, Python stacks of the agents (SIGUSR1) and of pytest (SIGABRT,
# faulthandler) into their logs, then pytest is killed so the run ends with
# a result instead of the host's timeout.
watchdog() {  # PID of pytest
    waited=0
    while kill -0 "$1" 2>/dev/null; do
        sleep 20
        waited=$((waited + 20))
        snapshot > "$results/snapshot.txt" 2>&1
        dmesg > "$results/dmesg.txt" 2>&1
        [ "$waited" -lt "$deadline" ] && continue
        echo "tetrahost-vm: pytest still running after $deadline s: dumping stacks, stopping it"
        cat "$results/snapshot.txt"
        echo w > /proc/sysrq-trigger
        echo l > /proc/sysrq-trigger
        pkill -USR1 -f "tetrahost.cli.main run"
        sleep 2
        # the agents' logs (with those stacks) live in pytest's temporary directories
        ls -t $(find /tmp/pytest-of-root -name '*.log' 2>/dev/null) 2>/dev/null | head -n 8 | while read -r log; do
            echo "==== $log"; tail -n 150 "$log"
        done > "$results/agent-logs.txt"
        kill -ABRT "$1"
        sleep 5
        kill -KILL "$1" 2>/dev/null
        return
    done
}

# The venv interpreter by absolute path: in the guest `python3` may be another one.
# faulthandler_timeout: the Python stacks of a test that takes over 15 minutes.
# Not 5: the kernel suite's longest test (test_pinning's ten restarts) takes 5-6
# minutes in a guest, and the dump, made by faulthandler's own thread while the
# test's thread runs on, reads that thread's frames without the GIL: it crashed
# pytest (SIGSEGV, exit 139) in a 6.12 guest (CPython issues 116008, 140815).
paths=""
old_ifs=$IFS; IFS=:
for t in $tests; do paths="$paths $repo/$t"; done
IFS=$old_ifs
# -m vm only for tests/vm alone: behaviour tests of tests/kernel in the list run as they are
case "$tests" in *tests/kernel*) marker="" ;; tests/vm*) marker="-m vm" ;; *) marker="" ;; esac
# -v: each test is named on the console as it starts, so a wedged run shows where.
# env --default-signal: sh starts a background command with SIGINT and SIGQUIT
# ignored (no job control), and Python then installs no KeyboardInterrupt
# handler, in pytest nor in what it starts: the tests stop their `tetra
# getevents` streams with SIGINT, which such a child ignored (the control
# socket tests hung in the guest, not on the host).
# shellcheck disable=SC2086  # paths and marker are word lists on purpose
env --default-signal=INT,QUIT "$repo/.venv/bin/python" -m pytest $paths $marker -p no:cacheprovider -rs -v \
    -o faulthandler_timeout=900 --junitxml="$results/junit.xml" "$@" &
pytest_pid=$!
watchdog "$pytest_pid" &
watchdog_pid=$!
wait "$pytest_pid"
rc=$?
kill "$watchdog_pid" 2>/dev/null

# For the kernel matrix (tests/vm/matrix.py): what this kernel offers and
# how the seed policies attach here, verified by the kernel (policy check).
uname -r > "$results/release.txt"
cat /sys/kernel/security/lsm > "$results/lsm.txt" 2>/dev/null
"$repo/.venv/bin/python" -m tetrahost.cli.main probe -o json > "$results/probe.json" 2>/dev/null
seeds=$(ls "$repo"/../shared/conformance/seed-policies/*.yaml 2>/dev/null)
# shellcheck disable=SC2086
[ -n "$seeds" ] && "$repo/.venv/bin/python" -m tetrahost.cli.main policy check -o json $seeds \
    > "$results/seeds.json" 2>/dev/null

dmesg > "$results/dmesg.txt" 2>&1
# Written last: its presence tells the host that the guest got to the end.
echo "$rc" > "$results/exit_code"
sync
exit "$rc"
