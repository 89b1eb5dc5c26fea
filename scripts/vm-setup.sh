#!/bin/bash
# Install what tests/vm/run.py needs on a Debian 12 machine (run as root).
#
# Idempotent: every step checks first and is skipped when already done, so a
# second run takes well under a second. What it provides:
#   - qemu-system-x86, kmod, busybox-static: virtme-ng boots the guest with them
#   - linux-image-amd64: Debian's 6.1 kernel (kprobes, fentry, BPF-LSM), the guest kernel
#   - linux-image-6.12-amd64, linux-image-rt-amd64: Debian 12's 6.12 LTS and
#     PREEMPT_RT 6.1 kernels, for the kernel matrix (tests/vm/matrix.py)
#   - systemd, dbus: PID 1 and the bus of the guest in systemd mode (run.py --systemd)
#   - python3-venv, then virtme-ng (PyPI) in its own venv /opt/vng, kept apart
#     from the project venv
# Recommends are skipped (qemu's would pull a GUI stack); what is needed is in Depends.
set -euo pipefail

VNG_VENV=${VNG_VENV:-/opt/vng}
# systemd-journal-remote: the journal_remote scenario (the guest shares the host root)
APT_PACKAGES=(qemu-system-x86 kmod busybox-static linux-image-amd64 linux-image-6.12-amd64 linux-image-rt-amd64
              systemd dbus python3-venv systemd-journal-remote)

log() { echo "vm-setup: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (apt-get install)"
    exit 1
fi

installed() {  # true when the package is fully installed (not half-configured)
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" = "ii " ]
}

have_kernel() {
    compgen -G '/boot/vmlinuz-6.1.*-amd64' >/dev/null && compgen -G '/boot/vmlinuz-6.12.*-amd64' >/dev/null \
        && compgen -G '/boot/vmlinuz-6.1.*-rt-amd64' >/dev/null
}

export DEBIAN_FRONTEND=noninteractive

# A kernel package whose postinst (initramfs generation) was interrupted stays
# half-configured and blocks every later apt-get call: finish it first.
if dpkg --audit 2>/dev/null | grep -q .; then
    log "finishing half-configured packages (apt-get -f install)"
    dpkg --configure -a || true
    apt-get -f install -y
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    # Update the package lists only when they are absent or apt cannot find a package.
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null \
        || ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}" || {
            apt-get -f install -y
            apt-get install -y --no-install-recommends "${missing[@]}"
        }
    fi
fi
if ! have_kernel; then
    log "the kernel packages are installed but /boot lacks vmlinuz-6.1.*-amd64, -6.12.*-amd64 or -6.1.*-rt-amd64"
    exit 1
fi

if [ ! -x "$VNG_VENV/bin/vng" ]; then
    log "installing virtme-ng into $VNG_VENV"
    # Debian's interpreter (python3-venv above), not whatever python3 is first in PATH.
    [ -x "$VNG_VENV/bin/pip" ] || /usr/bin/python3 -m venv "$VNG_VENV"
    "$VNG_VENV/bin/pip" install --quiet virtme-ng
fi

log "ok: $(ls /boot/vmlinuz-6.1*-amd64 | tr '\n' ' ')$("$VNG_VENV/bin/vng" --version 2>&1 | head -n1)"
