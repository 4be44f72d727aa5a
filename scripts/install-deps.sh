#!/usr/bin/env bash
# Installs the Debian 12 packages that building, running and testing dnnfault
# need. Idempotent; uses sudo when not run as root.
set -euo pipefail

packages=(
  build-essential meson ninja-build pkg-config
  libuv1-dev libprotobuf-c-dev protobuf-c-compiler libsqlite3-dev
  libxgboost-dev libcmocka-dev libsystemd-dev systemd
  sqlite3 valgrind xz-utils
  python3 python3-torch python3-numpy python3-sklearn python3-pytest python3-prometheus-client
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends "${missing[@]}"
