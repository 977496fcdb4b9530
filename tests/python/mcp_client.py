"""The official MCP Python SDK against capgate, as an agent would use it.

Usage: python mcp_client.py URL MODE   (MODE: "legacy" for the initialize
handshake and a session, "auto" for what `Client(url)` picks: 2026-07-28),
or     python mcp_client.py stdio MODE COMMAND [ARG...]   to start the
server as a process and speak MCP on its stdin/stdout (`capgate mcp-stdio`).

Prints one JSON object per line for the Rust test that drives it
(tests/tests/e2e/official_clients.rs): what the client saw at each step.
After `waiting_for_change` it waits for the server's list_changed, which
the test causes by registering another function.
"""

import asyncio
import json
import sys

import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError


def out(**fields):
    print(json.dumps(fields), flush=True)


async def main(url: str, mode: str, command: list[str]) -> None:
    changed = asyncio.Event()

    async def on_message(message):
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()
        elif isinstance(getattr(message, "root", None), types.ToolListChangedNotification):
            changed.set()

    server = StdioServerParameters(command=command[0], args=command[1:]) if url == "stdio" else url
    async with Client(server, mode=mode, message_handler=on_message, cache=None) as client:
        out(event="connected", protocol=client.protocol_version)
        tools = await client.list_tools()
        out(event="tools", names=sorted(tool.name for tool in tools.tools))
        result = await client.call_tool("hello__greet", {"name": "python"})
        out(event="call", is_error=bool(result.is_error), structured=result.structured_content)
        bad = await client.call_tool("hello__greet", {"name": 5})
        text = " ".join(getattr(block, "text", "") for block in bad.content)
        out(event="bad_input", is_error=bool(bad.is_error), text=text)
        try:
            await client.call_tool("nope__missing", {})
            out(event="unknown", code=None)
        except MCPError as error:
            out(event="unknown", code=error.error.code, message=error.error.message)
        if mode == "legacy":
            out(event="waiting_for_change")
            await asyncio.wait_for(changed.wait(), 20)
        else:
            async with client.listen(tools_list_changed=True) as subscription:
                out(event="waiting_for_change")
                async for _event in subscription:
                    break
        tools = await client.list_tools()
        out(event="changed", names=sorted(tool.name for tool in tools.tools))
    out(event="closed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
