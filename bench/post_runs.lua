-- wrk script: POST /api/v1/runs with a small spec; the key comes from the KEY environment
-- variable. Usage: KEY=adk_... wrk -t2 -c64 -d10s -s bench/post_runs.lua http://127.0.0.1:8080
wrk.method = "POST"
wrk.path = "/api/v1/runs"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
wrk.body = '{"project": "bench", "spec": "# Add a --verbose flag\\n\\nPrint each step when --verbose is given."}'
