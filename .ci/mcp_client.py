"""Drives Autodev's MCP server with the official Python SDK (`mcp` on PyPI), as an editor would.

    python mcp_client.py stdio AUTODEV_BINARY REPO_DIR PROJECT
    python mcp_client.py http  URL API_KEY PROJECT
    python mcp_client.py call  URL API_KEY TOOL ARGUMENTS_JSON   (one tool call)
    python mcp_client.py read  URL API_KEY RESOURCE_URI          (one resource)

Initializes, lists the tools (each must have an input schema), calls search_code and
create_run (and get_run, list_runs, cancel_run, a failing call), lists the reports as
resources; prints one JSON object with what it saw. Any protocol failure is an exception
(exit 1); the Rust test checks the printed results.
"""
import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def text_of(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def exercise(session: ClientSession, project: str, search_project):
    out = {}
    init = await session.initialize()
    out["server"] = init.server_info.name
    tools = await session.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    out["schemas_ok"] = all(t.input_schema.get("type") == "object" for t in tools.tools)
    out["search_code_required"] = next(t.input_schema.get("required", []) for t in tools.tools if t.name == "search_code")
    args = {"query": "where is the greeting built"}
    if search_project:
        args["project"] = project
    found = await session.call_tool("search_code", args)
    out["search_error"] = bool(found.is_error)
    out["search"] = json.loads(text_of(found)) if not found.is_error else text_of(found)
    created = await session.call_tool("create_run", {"project": project, "spec": "Add a farewell next to the greeting.", "approve_plan": True})
    out["create_error"] = bool(created.is_error)
    run = json.loads(text_of(created)) if not created.is_error else {"error": text_of(created)}
    out["run"] = run
    if not created.is_error:
        got = await session.call_tool("get_run", {"id": run["id"]})
        out["get_state"] = json.loads(text_of(got))["state"]
        listed = await session.call_tool("list_runs", {"project": project, "limit": 5})
        out["listed"] = [r["id"] for r in json.loads(text_of(listed))["runs"]]
        cancelled = await session.call_tool("cancel_run", {"id": run["id"]})
        out["cancelled_state"] = json.loads(text_of(cancelled)).get("state")
    bad = await session.call_tool("create_run", {"project": project, "spec": "   "})
    out["bad_error"] = bool(bad.is_error)
    out["bad_text"] = text_of(bad)
    missing = await session.call_tool("get_run", {"id": "nope"})
    out["missing_error"] = bool(missing.is_error)
    resources = await session.list_resources()
    out["resources"] = [str(r.uri) for r in resources.resources]
    return out


async def main():
    mode = sys.argv[1]
    if mode == "stdio":
        binary, repo, project = sys.argv[2:5]
        # The SDK starts the server with a minimal environment; the variables Autodev reads
        # are passed on as an editor's MCP configuration would (`env`).
        env = {k: v for k, v in os.environ.items() if k.startswith(("AUTODEV_", "OPENAI_"))}
        params = StdioServerParameters(command=binary, args=["mcp", "--repo", repo], env=env)
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                out = await exercise(session, project, search_project=False)
    elif mode in ("call", "read"):
        url, key, what, arg = sys.argv[2:6] if mode == "call" else (*sys.argv[2:5], None)
        client = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        async with client:
            async with streamable_http_client(url, http_client=client) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    if mode == "call":
                        r = await session.call_tool(what, json.loads(arg))
                        out = {"is_error": bool(r.is_error), "text": text_of(r)}
                    else:
                        r = await session.read_resource(what)
                        c = r.contents[0]
                        out = {"uri": str(c.uri), "mime_type": c.mime_type, "text": getattr(c, "text", "")}
    else:
        url, key, project = sys.argv[2:5]
        client = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        async with client:
            async with streamable_http_client(url, http_client=client) as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write) as session:
                    out = await exercise(session, project, search_project=True)
    print(json.dumps(out))


asyncio.run(main())
