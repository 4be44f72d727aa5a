#!/bin/bash
# The checks that need a GPU, run by hand on a machine whose torch sees one
# (CI has none, and there these tests skip): the Python client on CUDA
# tensors (tests/python/test_cuda.py), the whole Python suite under that
# machine's torch, and the overhead benchmark on the GPU.
#
#   bash scripts/gpu-check.sh [LOGDIR]
#
# Run from the repository root with the build in ./build; PYTHON picks the
# interpreter (default python3). Logs go to LOGDIR (default: the current
# directory); the exit status is 0 only if every part passed. Where the
# machine lacks the build's shared libraries (libuv, libprotobuf-c,
# libsqlite3, libxgboost, ... as `ldd build/daemon/dnnfaultd` lists them),
# copy them from the build machine into a folder and point LD_LIBRARY_PATH
# at it.
set -uo pipefail
py=${PYTHON:-python3}
logs=${1:-.}
mkdir -p "$logs"
export PYTHONPATH=$PWD/client/python PYTHONUNBUFFERED=1
export DNNFAULT_LIBRARY=$PWD/build/client/libdnnfault.so
export DNNFAULTD=$PWD/build/daemon/dnnfaultd DNNFAULTCTL=$PWD/build/client/dnnfaultctl
rc=0
part() { # name, command...: runs one part, logs it, remembers a failure
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$logs/$name.log"
    local st=${PIPESTATUS[0]}
    echo "== $name: exit $st after $((SECONDS - t0)) s"
    [ "$st" = 0 ] || rc=1
}
nvidia-smi -L || true
"$py" -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__,
  "cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
# Quickest and most telling first: a session's device time may run out.
part cuda-tests "$py" -m pytest -q -p no:cacheprovider -rs tests/python/test_cuda.py
for m in mlp cnn wide-mlp; do  # each the first loop of its process, as in a user's script
    part "step-graph-keys-$m" "$py" bench/step_graphs.py --models "$m"
done
part step-graphs-cuda "$py" bench/overhead.py --device cuda --step-graphs --host-copy --repeats 3 --steps 1000
part bench-cuda "$py" bench/overhead.py --device cuda --repeats 5 --scale 4
part breakdown-cuda "$py" bench/overhead.py --device cuda --breakdown --repeats 3 --scale 2
part stats-cost-cuda "$py" bench/overhead.py --device cuda --stats-cost
part python-suite "$py" -m pytest -q -p no:cacheprovider -rs tests/python
exit $rc
