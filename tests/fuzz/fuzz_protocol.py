"""Mutation fuzzer for dnnfaultd's wire protocol.

Records the frames of real sessions (a simulated training run through the
C client, its faulty twin, and dnnfaultctl's verbs) through a proxy, then
replays them to a daemon with mutations: protobuf-aware ones (a field
deleted, repeated or renumbered, extreme varints, NaN/Inf floats, empty,
huge or foreign strings and sub-messages) and byte-level ones (bit flips,
inserts, deletes, truncated frames), one connection per try. The daemon
must stay up throughout, still serve a clean client afterwards, keep what
it had stored before, never fail a commit (a message that does fails every
connection's batch, at each resend), and exit 0 on SIGTERM: built with sanitizers
(abort_on_error), any memory error or undefined behaviour fails the run.

    python3 tests/fuzz/fuzz_protocol.py --daemon build-asan/daemon/dnnfaultd \\
        --ctl build/client/dnnfaultctl --sim build/examples/simulated_training \\
        --iterations 100000 --seed 1

Plain python3 (no torch). Exit 0 when the daemon survived, 1 otherwise.
"""

import argparse
import base64
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time


def start_daemon(path, workdir, name, extra=()):
    sock = os.path.join(workdir, name + ".sock")
    log = open(os.path.join(workdir, name + ".log"), "wb")
    proc = subprocess.Popen([path, "--socket", sock, "--db", os.path.join(workdir, name + ".db"),
                             "--model", "none", "--log-level", "error"] + list(extra),
                            stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (path, proc.returncode))
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(sock)
            return proc, sock
        except OSError:
            time.sleep(0.02)
        finally:
            s.close()
    raise RuntimeError("%s did not listen" % path)


class Recorder:
    """A Unix-socket proxy that keeps each connection's client frames."""

    def __init__(self, listen, target):
        self.target, self.sessions, self.lock = target, [], threading.Lock()
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(listen)
        self.server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._proxy, args=(c,), daemon=True).start()

    @staticmethod
    def _pump(a, b, keep):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
                if keep is not None:
                    keep.append(d)
        except OSError:
            pass
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _proxy(self, c):
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.target)
        got = []
        ts = [threading.Thread(target=self._pump, args=(c, s, got)),
              threading.Thread(target=self._pump, args=(s, c, None))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        data, frames = b"".join(got), []
        while len(data) >= 4:
            n = int.from_bytes(data[:4], "big")
            frames.append(data[4:4 + n])
            data = data[4 + n:]
        if frames:
            with self.lock:
                self.sessions.append(frames)
        c.close()
        s.close()


def record(args, workdir):
    proc, sock = start_daemon(args.record_daemon or args.daemon, workdir, "record")
    try:
        proxy = os.path.join(workdir, "proxy.sock")
        rec = Recorder(proxy, sock)
        addr = "unix:" + proxy
        for extra in ([], ["--fault", "lr_high"]):
            subprocess.run([args.sim, "--address", addr, "--run", "seed-run" + "".join(extra),
                            "--steps", "40", "--every-ms", "0", "--epoch-steps", "10"] + extra,
                           check=True, stdout=subprocess.DEVNULL, timeout=120)
        for verb in (["status"], ["runs"], ["show", "seed-run"], ["export", "seed-run"],
                     ["export", "seed-run", "--format", "csv"], ["label", "seed-run", "lr_high"],
                     ["reference", "seed-run--faultlr_high", "seed-run"], ["stats"],
                     ["model", "info"], ["--json", "status", "seed-run"]):
            subprocess.run([args.ctl, "--address", addr] + verb, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
        time.sleep(0.5)
        rec.server.close()
        return rec.sessions
    finally:
        proc.terminate()
        proc.wait(30)


# Envelope fields of RunStart, Step, Epoch and RunEnd; their stream is field 2.
TRAINER_BODIES = (3, 4, 5, 6)


def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def read_varint(b, i):
    n = shift = 0
    while True:
        if i >= len(b) or shift > 63:
            raise ValueError
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def parse(b):
    """A protobuf message as [field, wire type, value]; ValueError if not one."""
    i, out = 0, []
    while i < len(b):
        key, i = read_varint(b, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(b, i)
        elif wt in (1, 5):
            n = 8 if wt == 1 else 4
            v, i = b[i:i + n], i + n
        elif wt == 2:
            n, i = read_varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError
        if i > len(b):
            raise ValueError
        out.append([field, wt, v])
    return out


def serialize(fields):
    out = b""
    for field, wt, v in fields:
        out += varint((field << 3) | wt)
        out += varint(v) if wt == 0 else (varint(len(v)) + v if wt == 2 else v)
    return out


class Mutator:
    FLOATS = [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 3.4e38, 1e-45]
    VARINTS = [0, 1, 2, 255, 65535, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**64 - 1]

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def protobuf(self, b, depth=0):
        rng = self.rng
        try:
            fields = parse(b)
        except ValueError:
            return None
        if not fields:
            return None
        k = rng.randrange(len(fields))
        field, wt, v = fields[k]
        if wt == 2 and depth < 6 and rng.random() < 0.5:
            sub = self.protobuf(v, depth + 1)
            if sub is not None:
                fields[k][2] = sub
                return serialize(fields)
        r = rng.random()
        if r < 0.1:
            del fields[k]
        elif r < 0.2:
            fields.insert(k, list(fields[k]))
        elif r < 0.25:
            fields[k][0] = rng.choice([1, 2, 3, 15, 16, 99, 536870911])
        elif wt == 0:
            fields[k][2] = rng.choice(self.VARINTS + [rng.getrandbits(64)])
        elif wt == 5:
            fields[k][2] = struct.pack("<f", rng.choice(self.FLOATS))
        elif wt == 1:
            fields[k][2] = struct.pack("<d", rng.choice(self.FLOATS + [1e308]))
        else:
            c = rng.random()
            if c < 0.3:
                fields[k][2] = b""
            elif c < 0.5:
                fields[k][2] = v * (rng.choice([2, 50, 1000]) if len(v) < 2000 else 2)
            elif c < 0.7:
                fields[k][2] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
            elif c < 0.85:
                fields[k][2] = v[:rng.randrange(len(v) + 1)]
            else:
                fields[k][2] = rng.choice([b"\xff\xfe", b"\x00" * 10, "\u00f8".encode() * 300,
                                           b"\xed\xa0\x80"])
        return serialize(fields)

    def bytes(self, b):
        rng, b = self.rng, bytearray(b)
        for _ in range(rng.randrange(1, 6)):
            if not b:
                break
            i, c = rng.randrange(len(b)), rng.random()
            if c < 0.5:
                b[i] ^= 1 << rng.randrange(8)
            elif c < 0.7:
                b[i] = rng.choice([0, 0xFF, 0x7F, 0x80])
            elif c < 0.85:
                del b[i]
            else:
                b.insert(i, rng.getrandbits(8))
        return bytes(b)

    def fresh_streams(self, frames):
        """The frames with each stream id replaced by a new one: replayed
        with the recorded ids, every step after the first try would be a
        duplicate, which the daemon drops before storing anything."""
        ids, out = {}, []
        for frame in frames:
            try:
                env = parse(frame)
                for f in env:
                    if f[0] in TRAINER_BODIES and f[1] == 2:
                        body = parse(f[2])
                        for g in body:
                            if g[0] == 2 and g[1] == 0:
                                g[2] = ids.setdefault(g[2], self.rng.getrandbits(63) + 1)
                        f[2] = serialize(body)
                out.append(serialize(env))
            except ValueError:
                out.append(frame)
        return out

    def session(self, sessions):
        rng = self.rng
        s = self.fresh_streams(rng.choice(sessions))
        for _ in range(rng.choice([1, 1, 1, 2, 5])):
            i = rng.randrange(len(s))
            m = self.protobuf(s[i]) if rng.random() < 0.75 else None
            s[i] = (m if m is not None else self.bytes(s[i]))[:6 << 20]
        if rng.random() < 0.1:
            s = s[:rng.randrange(1, len(s) + 1)] + s
        if rng.random() < 0.1:
            rng.shuffle(s)
        data = b"".join(struct.pack(">I", len(p)) + p for p in s)
        if rng.random() < 0.05:
            data = data[:rng.randrange(len(data))]
        return data


def replay(sock, data):
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(2)
    try:
        c.connect(sock)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
    except socket.timeout:
        pass
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--daemon", required=True, help="the dnnfaultd to fuzz")
    ap.add_argument("--record-daemon", help="the dnnfaultd that records the sessions (default: --daemon)")
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--sim", required=True, help="examples/simulated_training")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="dnnfault-fuzz-")
    ok = False
    try:
        sessions = record(args, workdir)
        print("recorded %d sessions, %d frames" % (len(sessions), sum(map(len, sessions))))
        proc, sock = start_daemon(args.daemon, workdir, "target")
        subprocess.run([args.sim, "--address", "unix:" + sock, "--run", "kept", "--steps", "30",
                        "--every-ms", "0"], check=True, stdout=subprocess.DEVNULL, timeout=120)
        before = subprocess.run([args.ctl, "--address", "unix:" + sock, "export", "kept", "--format",
                                 "csv"], capture_output=True, check=True, timeout=60).stdout
        mutate = Mutator(args.seed)
        t0 = time.monotonic()
        for it in range(args.iterations):
            if proc.poll() is not None:
                print("dnnfaultd died at iteration %d (exit %s)" % (it, proc.returncode))
                break
            replay(sock, mutate.session(sessions))
        else:
            print("%d iterations in %.0f s" % (args.iterations, time.monotonic() - t0))
            after = subprocess.run([args.ctl, "--address", "unix:" + sock, "export", "kept",
                                    "--format", "csv"], capture_output=True, timeout=60)
            served = subprocess.run([args.sim, "--address", "unix:" + sock, "--run", "after",
                                     "--steps", "10", "--every-ms", "0"],
                                    stdout=subprocess.DEVNULL, timeout=120).returncode == 0
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
            with open(os.path.join(workdir, "target.log"), "rb") as f:
                failed_commits = f.read().count(b"commit of")
            ok = after.stdout == before and served and rc == 0 and failed_commits == 0
            print("stored run intact: %s, a clean client served: %s, failed commits: %d, "
                  "exit status %d" % (after.stdout == before, served, failed_commits, rc))
        if not ok:
            proc.kill()
            with open(os.path.join(workdir, "target.log"), "rb") as f:
                sys.stdout.write(f.read()[-6000:].decode("utf-8", "replace"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
