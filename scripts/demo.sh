#!/usr/bin/env bash
# The main job: installs what is needed, builds, starts dnnfaultd with its
# defaults, trains two real PyTorch models while it watches them (one with a
# learning rate 100x too high, which names the first as its reference run),
# and shows `dnnfaultctl status`: the live diagnosis, with the faulty run's
# root cause and its fix.
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

# The Python package straight from the source tree, on Debian's PyTorch.
export PYTHONPATH="$PWD/client/python" DNNFAULT_LIBRARY="$PWD/build/client/libdnnfault.so"
stamp=$(date +%H%M%S)
echo "== PyTorch: an MLP on digits, healthy, then with the learning rate x100"
echo "   (compared with the healthy one as its reference run)"
/usr/bin/python3 examples/train_digits.py --run "digits-$stamp"
/usr/bin/python3 examples/train_digits.py --run "digits-lr-high-$stamp" --fault lr_high \
  --reference "digits-$stamp"

# The last diagnosis of a run comes just after its end: wait for it.
for _ in $(seq 100); do
  "$ctl" --json status "digits-$stamp" "digits-lr-high-$stamp" | /usr/bin/python3 -c '
import json, sys
runs = json.load(sys.stdin)["runs"]
sys.exit(0 if all(r.get("diagnosed_step") == r.get("step") for r in runs) else 1)' && break
  sleep 0.1
done

echo
echo "== dnnfaultctl status"
"$ctl" status "digits-$stamp" "digits-lr-high-$stamp"
