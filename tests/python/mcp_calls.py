"""The official MCP Python SDK calling tools, as an agent would.

Usage: python mcp_calls.py URL MODE [TOOL ARGUMENTS_JSON]...
(MODE: "legacy" for the initialize handshake and a session, "auto" for
what `Client(url)` picks: 2026-07-28.)

Prints one JSON line with the tools listed, then one per call: whether it
was an error, its structured content, its text and its content blocks as
the SDK's models read them. Used by the REST
service tests (tests/tests/e2e/rest.rs).
"""

import asyncio
import json
import sys

from mcp import Client


def out(**fields):
    print(json.dumps(fields), flush=True)


async def main(url: str, mode: str, calls: list[str]) -> None:
    async with Client(url, mode=mode, cache=None) as client:
        listed, cursor = [], None
        while True:  # every page
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        out(event="tools", names=sorted(tool.name for tool in listed),
            tools={tool.name: {"annotations": tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else None,
                               "input": tool.input_schema}
                   for tool in listed})
        for name, arguments in zip(calls[::2], calls[1::2]):
            result = await client.call_tool(name, json.loads(arguments))
            text = " ".join(getattr(block, "text", "") for block in result.content)
            out(event="call", tool=name, is_error=bool(result.is_error),
                structured=result.structured_content, text=text,
                content=[block.model_dump(mode="json", by_alias=True, exclude_none=True)
                         for block in result.content])
    out(event="closed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
