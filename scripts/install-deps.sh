#!/bin/sh
# Debian 12 packages tetrahost needs to build, run and test, as root.
# Idempotent: skips apt entirely when everything is installed.
set -eu
PACKAGES="clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev pkg-config gcc make
python3 python3-venv python3-dev libsystemd-dev systemd util-linux procps
libbpf-tools bpftrace auditd systemtap-sdt-dev"
"$(dirname "$0")/apt-ensure.sh" $PACKAGES
# promtool (alert-rule tests, `promtool check metrics` on a scrape) and the server
# tests/kernel/test_prometheus.py
# starts on loopback; without its recommends (node exporter, web console libraries).
exec "$(dirname "$0")/apt-ensure.sh" --no-install-recommends prometheus
