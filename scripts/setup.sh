#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: installs what virt-dib needs (Debian packages,
# npm dependencies, the native addon), then builds the demo image from examples/elements.
#   scripts/setup.sh            install + demo build
#   scripts/setup.sh --no-demo  install only (CI runs the demo separately)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  libguestfs-dev libguestfs0 libguestfs-tools guestfish
  qemu-system-x86 qemu-utils supermin linux-image-amd64
  squashfs-tools fuse3 cpio attr e2fsprogs python3 python3-diskimage-builder sudo
  # xz: virt-dib unpacks the host kernel once to boot it at its PVH entry (a faster launch)
  xz-utils
  # what virt-dib adds to its build appliance (supermin copies installed host packages)
  python3-yaml perl gpgv debian-archive-keyring ca-certificates wget git rsync xfsprogs
  thin-provisioning-tools
  # tgz (pigz, on every core) and squashfs (tar2sqfs) are made on the host from the image root's archive
  pigz squashfs-tools-ng
  # the reproducibility test says what differs between two builds' outputs
  diffoscope-minimal
  # fuse2fs: the host reads a finished ext4 image tree itself (rootless FUSE, real inode numbers)
  fuse2fs
  # the docker output's test runs a private dockerd of its own (never the system's service)
  docker.io
  # grub-mount: a rootless FUSE view of a small image for the FUSE release tests
  grub-common
  # npm run lint checks native/ with it (.clang-tidy)
  clang-tidy
  # the build queue's tests start a private redis-server of their own (never the system's service)
  redis-server
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "setup: npm ci (builds the native addon with cmake-js)"
npm ci --no-audit --no-fund
npm run build:ts

if [ "${1:-}" = --no-demo ]; then exit 0; fi
npm run demo
