#!/bin/sh
# Debian 12 packages for `make deb`, `make rpm` and `make test-packaging`, as root.
# Idempotent: skips apt entirely when everything is installed.
#
# Three groups:
#  - build: debhelper + dh-python (+ the pyproject plugin for pybuild), clang and
#    libbpf-dev for the BPF objects, python3-dev/python3-cffi for the extension;
#    rpm provides rpmbuild.
#  - lint: lintian, rpmlint (Debian 12 has rpmlint 2.4).
#  - e2e: the .deb's runtime dependencies.  The systemd guest of tests/vm sees the
#    host root (no network inside), so `apt install ./tetrahost_*.deb` there can
#    only resolve dependencies that are already installed on the host.  curl is
#    for /metrics, setpriv (util-linux in Debian 12) for the capability checks.
set -eu
PACKAGES="debhelper dh-python python3-all pybuild-plugin-pyproject python3-setuptools
python3-cffi python3-all-dev libbpf-dev clang llvm dpkg-dev
rpm lintian rpmlint
python3-yaml python3-prometheus-client python3-systemd python3-sdnotify python3-pyroute2 libbpf1
curl util-linux bpftool python3-pytest"
exec "$(dirname "$0")/apt-ensure.sh" --no-install-recommends $PACKAGES
