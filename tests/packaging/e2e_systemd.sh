#!/bin/bash
# The .deb end to end in a real systemd guest: builds it when missing, then
# boots Debian's 6.1 kernel with systemd as PID 1 (tests/vm/run.py --systemd)
# and runs tests/vm/scenarios/deb_e2e.sh there.  Run as root from the repo
# (`make test-packaging` does).  Exit status: run.py's (0 pass, 1 fail, 2 the
# host lacks something).
set -euo pipefail
cd "$(dirname "$0")/../.."

results=${TETRAHOST_E2E_RESULTS:-build/packaging-e2e}
deb=$(ls -t build/deb/tetrahost_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
    make -f Makefile -f packaging/packaging.mk deb
    deb=$(ls -t build/deb/tetrahost_*.deb | head -n1)
fi
# The guest has no network: apt there resolves the package's dependencies
# from what the host has installed (the guest root is the host's).
scripts/install-packaging-deps.sh
bash scripts/vm-setup.sh

mkdir -p "$results"
cp "$deb" "$results/tetrahost.deb"
# The upgrade the scenario installs over it: the same package with a higher
# version and BPF objects of another build (one more, unloaded, ELF section
# changes their hash as a new release's compiler output would), so the
# upgraded agent finds pins of a foreign build and must replace them without
# a gap (docs/pinning.md).
next=$(mktemp -d)
dpkg-deb -R "$deb" "$next/pkg"
sed -i "s/^Version: .*/&+next1/" "$next/pkg/DEBIAN/control"
echo "next build" > "$next/note"
for obj in "$next"/pkg/usr/lib/tetrahost/bpf/*.bpf.o; do
    llvm-objcopy --add-section .tetrahost.next="$next/note" "$obj"
done
(cd "$next/pkg" && find usr -type f -exec md5sum {} + > DEBIAN/md5sums)
dpkg-deb --root-owner-group -b "$next/pkg" "$results/tetrahost-next.deb" >/dev/null
rm -rf "$next"
py=.venv/bin/python
[ -x "$py" ] || py=/usr/bin/python3      # run.py needs only the standard library
start=$(date +%s)
status=0
"$py" tests/vm/run.py --vm-timeout "${TETRAHOST_E2E_VM_TIMEOUT:-1200}" --vm-results "$results" \
    --systemd tests/vm/scenarios/deb_e2e.sh || status=$?
echo "== deb e2e in the systemd guest: exit $status, $(( $(date +%s) - start )) s (boot included)"
exit $status
