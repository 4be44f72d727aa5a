"""Fixtures: a real dnnfaultd on a temporary socket and database, and
dnnfaultctl to read what it stored. Paths come from $DNNFAULTD and
$DNNFAULTCTL (set by meson test), else the default build tree."""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAEMON = os.environ.get("DNNFAULTD") or os.path.join(ROOT, "build", "daemon", "dnnfaultd")
CTL = os.environ.get("DNNFAULTCTL") or os.path.join(ROOT, "build", "client", "dnnfaultctl")
# The source tree's bundle, named explicitly so that a build carried to
# another machine (scripts/gpu-check.sh) serves it too.
BUNDLE_DIR = os.path.join(ROOT, "models", "default")
MODEL_ARGS = ["--model", BUNDLE_DIR] if os.path.exists(os.path.join(BUNDLE_DIR, "bundle.txt")) else []
os.environ.setdefault("DNNFAULT_LIBRARY", os.path.join(ROOT, "build", "client", "libdnnfault.so"))


class Daemon:
    def __init__(self, tmp, args=()):
        self.dir = str(tmp)
        self.args = list(args)  # more dnnfaultd flags
        self.socket = os.path.join(self.dir, "d.sock")
        self.db = os.path.join(self.dir, "state", "dnnfault.db")
        self.address = "unix:" + self.socket
        self.log = os.path.join(self.dir, "daemon.log")
        self.proc = None

    def start(self):
        assert self.proc is None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([DAEMON, "--socket", self.socket, "--db", self.db]
                                         + MODEL_ARGS + self.args, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dnnfaultd exited with %s; see %s" % (self.proc.returncode, self.log))
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(self.socket)
                return
            except OSError:
                time.sleep(0.01)
            finally:
                s.close()
        raise RuntimeError("dnnfaultd did not listen on %s" % self.socket)

    def stop(self, sig=signal.SIGTERM):
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def ctl(self, *args, check=True):
        r = subprocess.run([CTL, "--address", self.address] + list(args),
                           capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise AssertionError("dnnfaultctl %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr))
        return r

    def status(self, run):
        return json.loads(self.ctl("--json", "status", run).stdout)["runs"][0]

    def final_status(self, run, timeout=60):
        """The run's status once its last stored step has been diagnosed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status(run)
            if s["state"] == "completed" and s.get("diagnosed_step") == s["step"]:
                return s
            time.sleep(0.2)
        raise AssertionError("run %s was not diagnosed to its end: %s" % (run, s))

    def show(self, run):
        return json.loads(self.ctl("--json", "show", run).stdout)

    def export(self, run):
        out = self.ctl("export", run, "--format", "jsonl").stdout
        return [json.loads(line, parse_constant=float) for line in out.splitlines() if line]


def num(v):
    """An exported value as a float ("NaN"/"Infinity" strings, null)."""
    if v is None:
        return None
    return float(v)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    d.start()
    yield d
    d.stop()


@pytest.fixture
def stopped_daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()
