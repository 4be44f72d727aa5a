"""DistributedDataParallel for real: two processes joined by torch.distributed
(gloo, on the CPU, so no GPU is needed), each watching its DDP-wrapped model,
report into one run of a real dnnfaultd. The ranks run this file as a
script."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn

from conftest import num

WORLD, STEPS, EVERY = 2, 12, 3


def _rank_main(rank, init_file, address):
    """One rank's training job (run as its own process by the test)."""
    import dnnfault
    from helpers import digits, mlp, train

    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                            world_size=WORLD)
    torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
    model = nn.parallel.DistributedDataParallel(mlp())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = digits()
    # Each rank trains on its own shard, as a DistributedSampler would.
    with dnnfault.watch(model, opt, nn.CrossEntropyLoss(), run="ddp", every=EVERY,
                        address=address) as mon:
        train(model, opt, mon, STEPS, batch=32, x=x[rank::WORLD], y=y[rank::WORLD])
    stats = mon.stats()
    if stats["acked"] != stats["queued"] or stats["errors"] != 0:
        raise SystemExit("rank %d: %s" % (rank, stats))
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")
def test_ddp_ranks_report_into_one_run(daemon, tmp_path):
    env = dict(os.environ)
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(tmp_path / "init"),
                               daemon.address], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for r in range(WORLD)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=180)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * WORLD, outputs

    # One run (rank 0's id, shared at watch()), both ranks in it.
    runs = json.loads(daemon.ctl("--json", "status").stdout)["runs"]
    assert [r["run"] for r in runs] == ["ddp"]
    st = daemon.status("ddp")
    assert (st["world_size"], st["ranks"], st["state"]) == (WORLD, WORLD, "completed")
    show = daemon.show("ddp")
    assert [l["name"] for l in show["layers"]] == ["0", "2", "4"]  # DDP's .module unwrapped
    assert sorted(s["rank"] for s in show["streams"]) == list(range(WORLD))

    rows = daemon.export("ddp")
    sampled = len(range(0, STEPS, EVERY))
    by_rank = {r: {row["step"]: row for row in rows if row["rank"] == r} for r in range(WORLD)}
    assert all(sorted(by_rank[r]) == list(range(0, STEPS, EVERY)) for r in range(WORLD))
    assert len(rows) == WORLD * sampled
    for step in range(0, STEPS, EVERY):
        a, b = by_rank[0][step], by_rank[1][step]
        # Different shards: different losses; but DDP keeps the replicas
        # identical (rank 0's initial weights, all-reduced gradients), so
        # the weights and the gradients the ranks report agree.
        assert num(a["loss"]) != num(b["loss"])
        for layer in ("0", "2", "4"):
            for stat in ("weight_norm", "grad_norm", "update_ratio"):
                va, vb = num(a["layers"][layer][stat]), num(b["layers"][layer][stat])
                assert math.isclose(va, vb, rel_tol=1e-4), (step, layer, stat, va, vb)


if __name__ == "__main__":
    _rank_main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
