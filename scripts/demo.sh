#!/usr/bin/env bash
# The main job: installs what is needed, builds, starts dnnfaultd with its
# defaults, streams a training job to it, and shows `dnnfaultctl status`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null

ctl=build/client/dnnfaultctl
# Start the daemon with its defaults unless one already answers.
if ! "$ctl" version >/dev/null 2>&1; then
  build/daemon/dnnfaultd &
  daemon=$!
  trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null' EXIT
  for _ in $(seq 100); do "$ctl" version >/dev/null 2>&1 && break; sleep 0.05; done
fi

echo "== a healthy training run and one whose learning rate is far too high"
build/examples/simulated_training --run demo-healthy --steps 400 --every-ms 1
build/examples/simulated_training --run demo-lr-high --steps 400 --every-ms 1 --fault lr_high

echo
echo "== dnnfaultctl status"
"$ctl" status
