#!/usr/bin/env bash
# Install QEMU 10 from Debian's bookworm-backports suite when the QEMU on PATH
# is older (bookworm ships 7.2, which has no x2APIC under TCG). Adds the suite
# with the same mirror as the system's bookworm entry, then installs the four
# packages QEMU 10 needs beyond bookworm. Root, Debian bookworm only; elsewhere
# it says what to do and fails.
set -euo pipefail

major() { qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p'; }
have=$(major || true)
if [ -n "$have" ] && [ "$have" -ge 10 ]; then
    exit 0
fi
say_how() {
    echo "QEMU 10 or later is needed (found: ${have:-none}). On Debian bookworm, as root: add the" >&2
    echo "bookworm-backports suite and run: apt-get install -t bookworm-backports qemu-system-x86" >&2
    echo "qemu-system-common qemu-system-data seabios" >&2
    exit 1
}
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || say_how
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ "$codename" = bookworm ] || say_how
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # The mirror of the system's own bookworm entry (deb822 or one-line format).
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$uri" ] || say_how
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" \
        > /etc/apt/sources.list.d/bookworm-backports.sources
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-system-common qemu-system-data seabios
have=$(major || true)
[ -n "$have" ] && [ "$have" -ge 10 ] || say_how
