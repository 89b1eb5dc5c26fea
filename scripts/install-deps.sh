#!/bin/sh
# Debian 12 packages tetrahost needs to build, run and test, as root.
# Idempotent: skips apt entirely when everything is installed.
set -eu
PACKAGES="clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev pkg-config gcc make
python3 python3-venv python3-dev libsystemd-dev systemd util-linux procps
libbpf-tools bpftrace auditd
prometheus"
# prometheus: for promtool (`promtool check metrics` on a scrape, tests/kernel/test_metrics.py)
exec "$(dirname "$0")/apt-ensure.sh" $PACKAGES
