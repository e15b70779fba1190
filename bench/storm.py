#!/usr/bin/env python3
"""Storm benchmark (docs/benchmarks.md, "Storms"): 600 distinct alerts posted within 5 s to one
hook routed to a Slack target (1/s) and a Teams target (4/s), the Alert API mock answering in
50 ms with the relay limited to 5 calls/s; one urgency-90 alert posted last.

    bench/storm.py target/release/sekoia-relay [--store-url postgres://…/db]

Reports, per target: seconds from the last post until every alert is visible (its short id in
a received body), messages sent, and seconds until the urgent alert is visible; and the Alert
API calls made. Nothing but the Python standard library; everything on 127.0.0.1.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

N = 600
URGENT = N  # the index of the urgent alert, posted last
HOOK = "5f0e3b2c9d8a47e6b1c4f7a2d5e8b0c3"
HERE = os.path.dirname(os.path.abspath(__file__))
ALERT = json.load(open(os.path.join(HERE, "..", "tests", "fixtures", "alert.json")))


def ids(n):
    return f"5696845f-0000-4000-8000-{n:012d}", f"ALstorm{n:04d}"


def alert(uuid):
    n = int(uuid.rsplit("-", 1)[1])
    a = dict(ALERT)
    u = 90 if n == URGENT else 10 + n % 50
    a.update(uuid=uuid, short_id=ids(n)[1], title=f"Storm alert {ids(n)[1]}",
             urgency={"current_value": u, "value": u})
    return a


received = {"slack": [], "teams": []}  # (time, body)
api_calls = {"single": 0, "batch": 0}
lock = threading.Lock()


class Mock(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        time.sleep(0.05)  # a real API's latency
        if url.path.startswith("/v1/sic/alerts/"):
            with lock:
                api_calls["single"] += 1
            return self.reply(200, json.dumps(alert(url.path.rsplit("/", 1)[1])))
        if url.path == "/v1/sic/alerts":
            with lock:
                api_calls["batch"] += 1
            uuids = parse_qs(url.query).get("match[uuid]", [""])[0].split(",")
            items = [alert(u) for u in uuids if u]
            return self.reply(200, json.dumps({"total": len(items), "items": items}))
        self.reply(404, "{}")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        name = self.path.strip("/")
        with lock:
            received.setdefault(name, []).append((time.monotonic(), body))
        if name == "teams":
            return self.reply(202, "")
        self.reply(200, "ok", "text/plain")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary")
    p.add_argument("--store-url", default="")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args()
    mock = ThreadingHTTPServer(("127.0.0.1", 0), Mock)
    threading.Thread(target=mock.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{mock.server_address[1]}"
    work = tempfile.mkdtemp(prefix="storm.")
    store = f'url = "{args.store_url}"' if args.store_url else f'path = "{work}/relay.db"'
    config = f"""
[server]
listen = "127.0.0.1:0"
log_format = "json"
[sekoia]
api_url = "{base}"
api_key = "bench-key"
max_requests_per_sec = 5
[store]
{store}
[targets.slack]
kind = "slack"
url = "{base}/slack"
rate_limit_per_sec = 1
[targets.teams]
kind = "teams"
url = "{base}/teams"
rate_limit_per_sec = 4
[[hooks]]
name = "storm"
id = "{HOOK}"
targets = ["slack", "teams"]
"""
    path = os.path.join(work, "config.toml")
    open(path, "w").write(config)
    relay = subprocess.Popen([args.binary, "--config", path, "serve"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = None
    for line in relay.stderr:
        m = re.search(r'"port":(\d+)', line)
        if m:
            port = int(m.group(1))
            break
    threading.Thread(target=lambda: [None for _ in relay.stderr], daemon=True).start()
    hook = f"http://127.0.0.1:{port}/hooks/{HOOK}"
    template = json.load(open(os.path.join(HERE, "..", "tests", "fixtures",
                                           "webhook-alert-created.json")))

    def post(n):
        e = json.loads(json.dumps(template))
        e["attributes"]["uuid"], e["attributes"]["short_id"] = ids(n)
        e["metadata"]["created_at"] = f"2026-12-03T10:00:00.{n:06d}+00:00"
        req = urllib.request.Request(hook, json.dumps(e).encode(),
                                     {"content-type": "application/json"})
        with urllib.request.urlopen(req) as r:
            assert r.status == 202, r.status

    start = time.monotonic()
    per = 5.0 / N
    threads = []
    for n in range(N):
        t = threading.Thread(target=post, args=(n,))
        t.start()
        threads.append(t)
        time.sleep(max(0, start + n * per - time.monotonic()))
    for t in threads:
        t.join()
    post(URGENT)
    last_post = time.monotonic()
    wanted = {ids(n)[1] for n in range(N + 1)}
    report = {}
    while time.monotonic() - last_post < args.timeout:
        with lock:
            snap = {k: list(v) for k, v in received.items()}
        done = True
        for name in ("slack", "teams"):
            seen = {}
            for at, body in snap.get(name, []):
                for sid in set(re.findall(r"ALstorm\d{4}", body)):
                    seen.setdefault(sid, at)
            missing = wanted - seen.keys()
            report[name] = {
                "all_visible_s": round(max(seen.values()) - last_post, 1) if not missing else None,
                "messages": len(snap.get(name, [])),
                "urgent_visible_s": round(seen[ids(URGENT)[1]] - last_post, 1)
                if ids(URGENT)[1] in seen else None,
                "missing": len(missing),
            }
            done &= not missing
        if done:
            break
        time.sleep(0.2)
    time.sleep(2)  # anything still queued
    with lock:
        for name in ("slack", "teams"):
            report[name]["messages"] = len(received.get(name, []))
    relay.terminate()
    relay.wait()
    print(json.dumps({"alerts": N + 1, "posted_in_s": round(last_post - start, 1),
                      "api_calls": api_calls, **report}))
    return 0 if all(r["missing"] == 0 for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
