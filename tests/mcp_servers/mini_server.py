"""A minimal MCP server on the standard library alone: newline-delimited JSON-RPC on stdin/stdout.

For where the SDK cannot be installed (the offline sandbox image has python3 and nothing else):
it runs inside the session's container in the sandboxed-server test. ``--malformed`` makes its
``broken`` tool answer with a result that is not a CallToolResult (for the malformed-answer test).
"""

import json
import os
import socket
import sys

TOOLS = [
    {"name": "whereami", "description": "Where this server runs: its directory, host name, network interfaces.",
     "inputSchema": {"type": "object", "properties": {}}, "annotations": {"readOnlyHint": True}},
    {"name": "write_note", "description": "Write a file in the working directory.",
     "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}, "text": {"type": "string"}},
                     "required": ["name", "text"]}},
    {"name": "broken", "description": "Answers with a malformed result.",
     "inputSchema": {"type": "object", "properties": {}}},
]


def call(name, args):
    if name == "whereami":
        try:
            interfaces = sorted(os.listdir("/sys/class/net"))
        except OSError:
            interfaces = []
        info = {"cwd": os.getcwd(), "hostname": socket.gethostname(), "uid": os.getuid(), "interfaces": interfaces,
                "has_api_key": any(k in os.environ for k in ("MOONSHOT_API_KEY", "KIMI_API_KEY")),
                "greeting": os.environ.get("MINI_GREETING")}
        return {"content": [{"type": "text", "text": json.dumps(info, sort_keys=True)}]}
    if name == "write_note":
        with open(args["name"], "w") as fh:
            fh.write(args["text"])
        return {"content": [{"type": "text", "text": "wrote " + os.path.abspath(args["name"])}]}
    if name == "broken":
        return {"content": "this should be a list of content blocks", "isError": "sometimes"}
    return None


def answer(message):
    method, mid = message.get("method"), message.get("id")
    if mid is None:
        return None  # a notification
    if method == "initialize":
        version = (message.get("params") or {}).get("protocolVersion", "2025-06-18")
        result = {"protocolVersion": version, "capabilities": {"tools": {}},
                  "serverInfo": {"name": "mini", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        params = message.get("params") or {}
        result = call(params.get("name"), params.get("arguments") or {})
        if result is None:
            return {"jsonrpc": "2.0", "id": mid, "error": {"code": -32602, "message": "unknown tool"}}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": f"method not found: {method}"}}
    return {"jsonrpc": "2.0", "id": mid, "result": result}


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = answer(json.loads(line))
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
