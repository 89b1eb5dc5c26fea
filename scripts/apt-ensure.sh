#!/bin/sh
# apt-ensure.sh [--no-install-recommends] PACKAGE...: install, as root, those
# of the Debian packages that are not installed yet; does nothing (no apt-get
# at all) when all are.  Shared by install-deps.sh and install-packaging-deps.sh.
set -eu
opts=""
if [ "${1:-}" = "--no-install-recommends" ]; then
    opts=$1
    shift
fi
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -n "$missing" ] || exit 0
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# a postinst that fails (auditd cannot start its daemon in a container, say)
# must not stop us: finish what can be configured and go on
apt-get install -y -qq $opts $missing || apt-get -f install -y -qq
# ...but a package that is still not there (not found, failed to unpack) is
# an error, named, not a success that fails later in the build
# (unpacked with a failed postinst counts: its files are there)
still=""
for p in $missing; do
    case "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" in
        installed|unpacked|half-configured|triggers-awaited|triggers-pending) ;;
        *) still="$still $p" ;;
    esac
done
if [ -n "$still" ]; then
    echo "apt-ensure: not installed:$still" >&2
    exit 1
fi
