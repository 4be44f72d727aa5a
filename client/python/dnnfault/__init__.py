"""dnnfault: stream PyTorch training telemetry to dnnfaultd.

    with dnnfault.watch(model, optimizer, loss_fn, run="mnist") as mon:
        for x, y in loader:
            optimizer.zero_grad()
            out = model(x)
            loss = loss_fn(out, y)
            loss.backward()
            optimizer.step()
            mon.step(loss, output=out, target=y, inputs=x)
        mon.epoch(train_loss=..., val_loss=..., val_metric=...)
    print(mon.diagnosis())

A thin layer over libdnnfault (ctypes): the wire format, the queue and the
connection live in C. See docs/python.md.
"""

from ._monitor import DEFAULT_EVERY, Monitor

__all__ = ["watch", "Monitor", "DEFAULT_EVERY", "__version__"]
__version__ = "0.1.0"


def watch(model, optimizer, loss_fn=None, run=None, every=DEFAULT_EVERY, address=None,
          tags=None, reference=None, **extra):
    """Starts monitoring a training run and returns its Monitor.

    model, optimizer: the torch.nn.Module (DataParallel/DDP are unwrapped)
        and the torch.optim.Optimizer being trained.
    loss_fn: the loss module or function (its name is reported and helps to
        infer the task).
    run: the run's name (default: script name + id); every: sample every
        N-th step, starting with step 0 (default 50).
    address: "unix:/path" or "tcp://host:port" (default $DNNFAULT_ADDRESS,
        else the daemon's default socket).
    tags: dict (or "key=value" strings) stored with the run.
    reference: the name or id of an earlier, healthy run of the same program
        (e.g. yesterday's training before a change), which the daemon
        compares this run with.
    extra: epochs=, steps=, batch_size=, dataset_size=, task= ("classification"
        or "regression"), num_classes=, labels= (ground-truth causes of a
        corpus run; [] means healthy), queue_bytes= (bound of the client's
        queue; default 64 MiB), run_id=, close_timeout= (seconds).

    Never raises because of monitoring: if libdnnfault cannot be loaded the
    monitor does nothing (one warning); the daemon may be down or absent.
    """
    return Monitor(model, optimizer, loss_fn=loss_fn, run=run, every=every, address=address,
                   tags=tags, reference=reference, **extra)
