"""The Prometheus endpoint of a real dnnfaultd (metrics_listen; docs/metrics.md):
a real PyTorch run streamed to it is scraped with the same health, causes and
symptoms that `dnnfaultctl status` shows, in a text that Prometheus's own
parser, promtool and a real Prometheus server accept; bad and slow requests
and too many connections get clear answers and leave the daemon serving;
a token keeps others out."""

import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import torch

import dnnfault
from conftest import DAEMON, ROOT, Daemon
from helpers import mlp, train
from test_diagnosis import BUNDLE, train_digits

prometheus_parser = pytest.importorskip("prometheus_client.parser")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp, *args):
    port = free_port()
    d = Daemon(tmp, ["--metrics-listen", "127.0.0.1:%d" % port] + list(args))
    d.port = port
    d.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return d
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def get(port, path="/metrics", method="GET", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        c.close()


def scrape(port):
    status, headers, text = get(port)
    assert status == 200, text
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["content-length"]) == len(text.encode())
    values = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in values, "repeated series %s" % (key,)
            values[key] = s.value
    return text, values


def series(values, name, **labels):
    return values.get((name, tuple(sorted(labels.items()))))


def raw(port, data, wait=10):
    """Sends bytes, returns what the daemon answers before it closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out.decode(errors="replace")
            out += chunk
    finally:
        s.close()


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """A daemon that watched a run with lr x100, and that run's status."""
    d = start(tmp_path_factory.mktemp("metrics"))
    try:
        train_digits(d, "m-lr-high", "--fault", "lr_high", "--seed", "3")
        yield d, d.final_status("m-lr-high")
    finally:
        d.stop()


def test_a_run_is_scraped_as_status_shows_it(scraped):
    d, st = scraped
    text, v = scrape(d.port)
    run = {"run": "m-lr-high", "run_id": st["id"]}
    for h in ("healthy", "suspect", "faulty", "unknown"):
        assert series(v, "dnnfault_run_health", health=h, **run) == (1.0 if h == st["health"] else 0.0)
    if os.path.exists(BUNDLE):
        assert st["health"] in ("faulty", "suspect")
    assert series(v, "dnnfault_run_state", state="completed", **run) == 1.0
    assert series(v, "dnnfault_run_state", state="running", **run) == 0.0
    assert series(v, "dnnfault_run_step", **run) == st["step"]
    assert series(v, "dnnfault_run_diagnosed_step", **run) == st["diagnosed_step"]
    assert series(v, "dnnfault_run_steps_stored", **run) == st["steps_stored"]
    assert series(v, "dnnfault_run_fault_probability", **run) == pytest.approx(st["fault_probability"], abs=1e-6)
    assert st["causes"] and st["symptoms"]
    for c in st["causes"]:
        assert series(v, "dnnfault_run_cause_probability", cause=c["id"], **run) == \
            pytest.approx(c["probability"], abs=1e-6)
    for y in st["symptoms"]:
        assert series(v, "dnnfault_run_symptom_first_step", symptom=y["id"], layer=y["layer"] or "",
                      **run) == y["first_step"]
    assert sum(1 for k in v if k[0] == "dnnfault_run_symptom_first_step") == len(st["symptoms"])
    # The daemon's counters, as `dnnfaultctl stats` has them.
    stats = json.loads(d.ctl("--json", "stats").stdout)
    assert series(v, "dnnfault_steps_stored_total") == stats["steps_stored"] >= st["steps_stored"]
    assert series(v, "dnnfault_runs_started_total") == 1
    assert series(v, "dnnfault_errors_total", error="limit") == 0
    assert series(v, "dnnfault_runs_stored") == 1 and series(v, "dnnfault_runs_exposed") == 1
    assert series(v, "dnnfault_model_loaded") == (1.0 if os.path.exists(BUNDLE) else 0.0)
    before = series(v, "dnnfault_metrics_requests_total")
    assert series(scrape(d.port)[1], "dnnfault_metrics_requests_total") == before + 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_promtool_accepts_the_text(scraped):
    d, _ = scraped
    text, _ = scrape(d.port)
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_the_documented_alert_rules_are_valid(tmp_path):
    doc = open(os.path.join(ROOT, "docs", "metrics.md")).read()
    rules = doc.split("```yaml\ngroups:", 1)[1].split("```", 1)[0]
    (tmp_path / "rules.yml").write_text("groups:" + rules)
    r = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yml")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS: 3 rules found" in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")
def test_prometheus_scrapes_the_daemon(scraped, tmp_path):
    d, st = scraped
    web = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                   "scrape_configs:\n  - job_name: dnnfaultd\n"
                   "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % d.port)
    with open(tmp_path / "prometheus.log", "wb") as log:
        prom = subprocess.Popen(["prometheus", "--config.file", str(cfg), "--storage.tsdb.path",
                                 str(tmp_path / "tsdb"), "--web.listen-address", "127.0.0.1:%d" % web],
                                stdout=log, stderr=log)

    def query(q):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (web, urllib.parse.urlencode({"query": q}))
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())["data"]["result"]

    try:
        deadline = time.monotonic() + 60
        got = None
        while time.monotonic() < deadline:
            try:
                got = query('dnnfault_run_health{run="m-lr-high"} == 1')
                if got:
                    break
            except OSError:
                pass
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.5)
        assert got, "Prometheus never stored the run's health; see %s" % (tmp_path / "prometheus.log")
        assert [r["metric"]["health"] for r in got] == [st["health"]]
        up = query('up{job="dnnfaultd"}')
        assert up and up[0]["value"][1] == "1"
        # docs/metrics.md's query: the most likely cause of each faulty run.
        if st["health"] == "faulty":
            top = query('topk by (run) (1, dnnfault_run_cause_probability * on (run_id) group_left '
                        'dnnfault_run_health{health="faulty"})')
            assert [r["metric"]["cause"] for r in top] == [st["causes"][0]["id"]]
        # The last scrape's own verdict: no sample was refused.
        refused = query('scrape_samples_post_metric_relabeling{job="dnnfaultd"} - scrape_samples_scraped')
        assert refused and float(refused[0]["value"][1]) == 0
    finally:
        prom.terminate()
        prom.wait(30)


def test_bad_requests_get_clear_answers(tmp_path):
    d = start(tmp_path, "--handshake-timeout-ms", "500")
    try:
        assert get(d.port, "/")[0] == 404
        status, headers, body = get(d.port, method="POST")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        status, headers, body = get(d.port, method="HEAD")
        assert status == 200 and body == "" and int(headers["content-length"]) > 1000
        assert raw(d.port, b"\x00\xff\xfe garbage\r\n\r\n").startswith("HTTP/1.1 400 ")
        assert raw(d.port, b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 9000).startswith("HTTP/1.1 431 ")
        t0 = time.monotonic()
        assert raw(d.port, b"GET /metrics HTTP/1.1\r\n").startswith("HTTP/1.1 408 ")
        assert 0.4 < time.monotonic() - t0 < 5
        # Random heads, half of them made of HTTP's own pieces: an answer or
        # a close, never a crash or a hang.
        rnd = random.Random(7)
        pieces = [b"GET ", b"HEAD ", b"/metrics", b" HTTP/1.1", b"\r\n", b"\n", b": ", b"Authorization",
                  b"Bearer x", b"\x00", b"\xff", b" ", b"?a=b", b"HTTP/1.0"]
        for k in range(300):
            if k % 2:
                data = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(1, 12)))
            else:
                data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)  # no more: EOF ends an unfinished head
                answer = s.recv(65536)
                assert answer == b"" or answer.startswith(b"HTTP/1.1 "), (data, answer[:80])
            finally:
                s.close()
        assert get(d.port)[0] == 200
        # Streaming goes on beside it.
        mon_run(d, "m-beside", steps=20)
        assert d.status("m-beside")["steps_stored"] == 20
        assert d.proc.poll() is None
    finally:
        d.stop()
    assert "metrics:" not in open(d.log).read()  # no store read failed


def mon_run(d, run, steps):
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with dnnfault.watch(model, opt, run=run, every=1, address=d.address) as mon:
        train(model, opt, mon, steps)
        assert mon.flush(timeout=10)


def test_idle_connections_cannot_keep_a_scraper_out(tmp_path):
    d = start(tmp_path, "--handshake-timeout-ms", "3000")
    idle = []
    try:
        assert get(d.port)[0] == 200  # and start()'s probe is long gone
        for _ in range(8):  # every slot taken by a client that never finishes
            s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            idle.append(s)
            time.sleep(0.02)
        time.sleep(0.2)
        # Each scrape with every slot taken closes the connection that has
        # waited longest; the slot it frees is taken again.
        for k in range(3):
            assert get(d.port)[0] == 200
            assert idle[k].recv(100) == b""
            s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            idle.append(s)
            time.sleep(0.05)
        idle[3].settimeout(0.2)
        with pytest.raises(socket.timeout):
            idle[3].recv(100)  # the younger ones are still there
        for s in idle:
            s.close()
        # Stopping with a connection open does not wait for it.
        idle = [socket.create_connection(("127.0.0.1", d.port), timeout=5)]
        time.sleep(0.1)
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(10) == 0
        assert time.monotonic() - t0 < 2
        d.proc = None
    finally:
        for s in idle:
            s.close()
        d.stop()


def test_the_newest_runs_have_series(tmp_path):
    d = start(tmp_path, "--metrics-max-runs", "1")
    try:
        mon_run(d, "m-old", steps=5)
        time.sleep(0.05)
        mon_run(d, "m-new", steps=5)
        _, v = scrape(d.port)
        assert series(v, "dnnfault_runs_stored") == 2 and series(v, "dnnfault_runs_exposed") == 1
        runs = {dict(k[1])["run"] for k in v if k[0] == "dnnfault_run_step"}
        assert runs == {"m-new"}
    finally:
        d.stop()


def test_a_token_keeps_others_out(tmp_path):
    d = start(tmp_path, "--metrics-token", "s3cret")
    try:
        status, headers, body = get(d.port)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert "dnnfault_" not in body
        assert get(d.port, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert get(d.port, headers={"Authorization": "Bearer s3cret"})[0] == 200
    finally:
        d.stop()
    # Reachable by others only with a token: a configuration error (exit 2).
    r = subprocess.run([DAEMON, "--socket", str(tmp_path / "x.sock"), "--db", str(tmp_path / "x.db"),
                        "--metrics-listen", "0.0.0.0:%d" % free_port()], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2, r.stderr
    assert "set metrics_token" in r.stderr
