#!/usr/bin/env bash
# Sets everything up and runs every test: the unit and integration suites on
# the normal build, again with AddressSanitizer + UBSan, and the unit suite
# under valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

configure() {  # configure DIR [meson options...]
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  ninja -C "$dir"
}

configure build -Dtests=enabled
meson test -C build --print-errorlogs

configure build-asan -Dtests=enabled -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --print-errorlogs --suite unit --suite integration

meson test -C build --setup valgrind --print-errorlogs --suite unit
