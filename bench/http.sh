#!/usr/bin/env bash
# HTTP benchmarks with wrk (Debian package `wrk`): /health, GET /api/v1/runs (a page of 50,
# authenticated) and POST /api/v1/runs (queued, not executed), against a release
# `autodev serve` on a fresh SQLite data directory with no workers. Prints requests/s, p99
# latency and the server's RSS idle and after the load.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p autodev-cli
bin="$target/release/autodev"
work=$(mktemp -d)
port="${PORT:-18080}"
export AUTODEV_HOME="$work/home" OPENAI_API_KEY=sk-benchmark AUTODEV_RATE_LIMIT_PER_MINUTE=0
git init -q -b main "$work/repo"
git -C "$work/repo" -c user.email=b@b -c user.name=bench commit -q --allow-empty -m init
KEY=$("$bin" keys create --name bench --role admin | tail -1)
"$bin" serve --listen "127.0.0.1:$port" --workers 0 2>"$work/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
echo "idle: $(grep VmRSS /proc/$pid/status)"
curl -sf -o /dev/null -X POST "localhost:$port/api/v1/projects" -H "Authorization: Bearer $KEY" \
  -H 'content-type: application/json' -d "{\"name\":\"bench\",\"repository\":\"$work/repo\",\"test_command\":\"true\"}"
for i in $(seq 1 60); do
  curl -sf -o /dev/null -X POST "localhost:$port/api/v1/runs" -H "Authorization: Bearer $KEY" \
    -H 'content-type: application/json' -d "{\"project\":\"bench\",\"spec\":\"# Run $i\"}"
done
echo "== GET /health"
wrk -t2 -c64 -d10s --latency "http://127.0.0.1:$port/health" | grep -E "Requests/sec|99%|Non-2xx"
echo "== GET /api/v1/runs?limit=50"
wrk -t2 -c64 -d10s --latency -H "Authorization: Bearer $KEY" "http://127.0.0.1:$port/api/v1/runs?limit=50" | grep -E "Requests/sec|99%|Non-2xx"
echo "== POST /api/v1/runs"
KEY=$KEY wrk -t2 -c64 -d10s --latency -s bench/post_runs.lua "http://127.0.0.1:$port" | grep -E "Requests/sec|99%|Non-2xx"
echo "after: $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr '\n' ' ')"
