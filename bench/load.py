#!/usr/bin/env python3
"""Load test: many runs through `autodev serve` at once, on a busy machine.

    python3 bench/load.py [--runs 500] [--workers 500] [--delay 2] [--postgres URL] [--bin PATH]
                          [--stop-at N]

A release `autodev serve --workers N` on a fresh data directory (SQLite, or a throwaway
database on the PostgreSQL server `--postgres` names), one project (a small Python package,
`textkit`, whose tests fail until two functions exist), and a scripted model speaking
OpenAI's chat-completions format that answers every call after `--delay` seconds: a plan of
two tasks (slugify, truncate), each task writes its module and finishes. N runs are created
through the API at once; the script waits until every run has ended and prints the wall
time, the throughput, the server's peak RSS, how runs ended (with the reason of every run
that did not succeed), and the lease counters from /metrics (renewals that came late, drivers
that lost their run). Exit code 1 when a run did not succeed.

With `--stop-at N`, the server gets SIGTERM as soon as N runs are in flight (claimed by it and not ended); the script
prints how long it took to exit (`stop_s`) and how many runs it had handed back, then starts a
second server on the same data directory, which must finish every run.

Not part of the test suite (it takes minutes); the README gives its figures.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLUG = '''import re


def slugify(text):
    """Lower-case words joined by dashes."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))
'''
TRUNC = '''def truncate(text, width):
    """At most width characters, ending in an ellipsis when cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "\u2026"
'''
TESTS = '''import unittest

from textkit.slug import slugify
from textkit.trunc import truncate


class TextkitTest(unittest.TestCase):
    def test_slugify(self):
        self.assertEqual(slugify("Hello, World!"), "hello-world")

    def test_truncate(self):
        self.assertEqual(truncate("abcdef", 4), "abc\u2026")
        self.assertEqual(truncate("abc", 4), "abc")


if __name__ == "__main__":
    unittest.main()
'''
PLAN = {
    "summary": "Two functions, one task each.",
    "tasks": [
        {"id": "slugify", "title": "Add slugify", "description": "textkit/slug.py: slugify(text)",
         "depends_on": [], "acceptance": ["tests pass"]},
        {"id": "truncate", "title": "Add truncate", "description": "textkit/trunc.py: truncate(text, width)",
         "depends_on": [], "acceptance": ["tests pass"]},
    ],
}


def conversation(messages):
    text = "\n".join(m.get("content") or "" for m in messages if isinstance(m.get("content"), str))
    turn = sum(1 for m in messages if m.get("role") == "assistant")
    if "You are the planner" in text:
        return "planner", turn
    m = re.search(r"# Your task: (\S+)", text)
    if m:
        return "task:" + m.group(1), turn
    return "other", turn


def answer(messages):
    conv, turn = conversation(messages)
    if conv == "planner":
        call = ("submit_plan", PLAN)
    elif conv == "task:slugify" and turn == 0:
        call = ("write_file", {"path": "textkit/slug.py", "content": SLUG})
    elif conv == "task:truncate" and turn == 0:
        call = ("write_file", {"path": "textkit/trunc.py", "content": TRUNC})
    else:
        call = ("finish", {"summary": "done"})
    return {
        "id": "chatcmpl-load", "object": "chat.completion", "created": 0, "model": "gpt-4.1-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "",
            "tool_calls": [{"id": f"call_{conv}_{turn}", "type": "function",
                            "function": {"name": call[0], "arguments": json.dumps(call[1])}}]}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
    }


def model_server(delay):
    class Model(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            time.sleep(delay)
            out = json.dumps(answer(body.get("messages", []))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            try:
                self.wfile.write(out)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a stopping server abandoned the call

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def git(repo, *args):
    subprocess.run(["git", "-C", repo, "-c", "user.email=b@b", "-c", "user.name=bench", *args],
                   check=True, capture_output=True)


def make_project(root):
    repo = os.path.join(root, "textkit")
    os.makedirs(os.path.join(repo, "textkit"))
    os.makedirs(os.path.join(repo, "tests"))
    open(os.path.join(repo, "textkit", "__init__.py"), "w").close()
    open(os.path.join(repo, "tests", "__init__.py"), "w").close()
    with open(os.path.join(repo, "tests", "test_textkit.py"), "w") as f:
        f.write(TESTS)
    subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "textkit")
    return repo


def api(base, key, method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024
    except (OSError, KeyError):
        return 0, 0


def claimed(env, dbname, postgres):
    """Runs a process holds (leased) that have not ended: in flight, whatever their state."""
    sql = ("SELECT COUNT(*) FROM runs WHERE lease_owner IS NOT NULL "
           "AND state NOT IN ('succeeded', 'failed', 'cancelled')")
    try:
        if postgres:
            url = postgres.rsplit("/", 1)[0] + "/" + dbname
            return int(subprocess.run(["psql", url, "-Atc", sql], capture_output=True, text=True).stdout.strip() or 0)
        import sqlite3
        db = sqlite3.connect(f"file:{os.path.join(env['AUTODEV_HOME'], 'autodev.db')}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql).fetchone()[0]
        finally:
            db.close()
    except Exception:  # the count is informative only
        return 0


def metric(text, name):
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--workers", type=int, default=500)
    ap.add_argument("--delay", type=float, default=2.0, help="seconds the model takes per call")
    ap.add_argument("--postgres", help="a PostgreSQL server URL (a throwaway database is made on it)")
    ap.add_argument("--bin", help="the autodev binary (default: cargo build --release)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--stop-at", type=int, default=0, help="SIGTERM the server when this many runs are in flight")
    args = ap.parse_args()

    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(here)
    binary = args.bin
    if not binary:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "autodev-cli"], cwd=top, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(top, "target"))
        binary = os.path.join(target, "release", "autodev")

    work = tempfile.mkdtemp(prefix="autodev-load-")
    env = dict(os.environ)
    env.update({
        "AUTODEV_HOME": os.path.join(work, "home"), "OPENAI_API_KEY": "sk-load",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{model_server(args.delay)}/v1", "AUTODEV_MODEL": "gpt-4.1-mini",
        "AUTODEV_STREAM": "false", "AUTODEV_RATE_LIMIT_PER_MINUTE": "0", "AUTODEV_LOG": "warn",
    })
    dbname = None
    if args.postgres:
        dbname = f"autodev_load_{os.getpid()}"
        subprocess.run(["psql", args.postgres, "-qc", f"CREATE DATABASE {dbname}"], check=True)
        env["DATABASE_URL"] = args.postgres.rsplit("/", 1)[0] + "/" + dbname
    server = None
    try:
        repo = make_project(work)
        key = subprocess.run([binary, "keys", "create", "--name", "load", "--role", "admin"], env=env,
                             check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        port = free_port()
        log = open(os.path.join(work, "serve.log"), "w")
        base = f"http://127.0.0.1:{port}"

        def start():
            """A server on the port, once it answers /health."""
            proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--workers", str(args.workers)],
                                    env=env, stdout=log, stderr=log)
            for _ in range(200):
                try:
                    urllib.request.urlopen(base + "/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            return proc
        server = start()
        idle_rss, _ = rss(server.pid)
        api(base, key, "POST", "/api/v1/projects",
            {"name": "textkit", "repository": repo, "test_command": "python3 -m unittest -q"})
        started = time.monotonic()
        ids = [api(base, key, "POST", "/api/v1/runs", {"project": "textkit", "spec": f"# Text helpers {i}\n\nAdd slugify and truncate."})["id"]
               for i in range(args.runs)]
        created = time.monotonic() - started
        print(f"created {len(ids)} runs in {created:.1f} s; idle RSS {idle_rss} MB", flush=True)
        peak_in_flight, states = 0, Counter()
        stop = None
        peak_first = 0
        peak_claimed = 0
        while time.monotonic() - started < args.timeout:
            states = Counter()
            cursor = ""
            while True:
                page = api(base, key, "GET", f"/api/v1/runs?project=textkit&limit=200{cursor}")
                for r in page["runs"]:
                    states[r["state"]] += 1
                if not page.get("next_cursor"):
                    break
                cursor = "&cursor=" + page["next_cursor"]
            ended = states["succeeded"] + states["failed"] + states["cancelled"]
            peak_in_flight = max(peak_in_flight, sum(v for k, v in states.items()
                                                     if k not in ("queued", "succeeded", "failed", "cancelled")))
            if ended >= len(ids):
                break
            in_flight = sum(v for k, v in states.items() if k not in ("queued", "succeeded", "failed", "cancelled"))
            held = claimed(env, dbname, args.postgres)
            peak_claimed = max(peak_claimed, held)
            if args.stop_at and stop is None and held >= args.stop_at:
                _, peak_first = rss(server.pid)
                t0 = time.monotonic()
                server.send_signal(15)
                server.wait(timeout=120)
                stop = {"claimed_at_stop": held, "in_flight_at_stop": in_flight, "stop_s": round(time.monotonic() - t0, 2),
                        "exit_code": server.returncode}
                print(f"stopped with {held} runs claimed ({in_flight} past queued) in {stop['stop_s']} s", flush=True)
                server = start()
                continue
            time.sleep(2)
        wall = time.monotonic() - started
        _, peak = rss(server.pid)
        peak = max(peak, peak_first)
        metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
        reasons = Counter()
        for run_id in ids:
            r = api(base, key, "GET", f"/api/v1/runs/{run_id}")
            if r["state"] != "succeeded":
                reasons[re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|/tmp/\S+", "…", r.get("reason") or r["state"])[:200]] += 1
        print(json.dumps({
            "backend": "postgres" if args.postgres else "sqlite",
            "runs": len(ids), "workers": args.workers, "model_delay_s": args.delay,
            "wall_s": round(wall, 1), "runs_per_min": round(len(ids) / wall * 60, 1),
            "peak_in_flight": peak_in_flight, "peak_claimed": peak_claimed, "peak_rss_mb": peak, "idle_rss_mb": idle_rss,
            "states": dict(states),
            "stop": stop,
            "lease_renewals_late": metric(metrics, "autodev_lease_renewals_late_total"),
            "leases_lost": metric(metrics, "autodev_leases_lost_total"),
            "load_avg": os.getloadavg(),
        }, indent=1))
        for reason, n in reasons.most_common():
            print(f"  {n:4} {reason}")
        return 0 if states["succeeded"] == len(ids) else 1
    finally:
        if server:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        if dbname:
            subprocess.run(["psql", args.postgres, "-qc", f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
