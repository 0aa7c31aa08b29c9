#!/usr/bin/env bash
# Installs the Debian packages that Trireme's tests, demo and benchmarks
# use, when any is missing. Needs root (apt-get).
set -euo pipefail

packages=(qemu-utils libnbd-bin nbdkit fio e2fsprogs xfsprogs iproute2 util-linux)
commands=(qemu-io qemu-img qemu-nbd nbdinfo nbdcopy nbdkit fio mkfs.ext4 mkfs.xfs ip losetup)

missing=0
for c in "${commands[@]}"; do
	command -v "$c" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 0 ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing tools; run as root or install: ${packages[*]}" >&2
	exit 1
fi
echo "install-deps: installing ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
