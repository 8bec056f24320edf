"""A WebSocket server for tests, in its own process, built on the `websockets` library.

    python -m tests.ws_peer [--echo] [--refuse STATUS] [--ping] [--close-after S]
                            [--tls CERT]

Prints its port on the first line of stdout, then serves until its stdin closes, which the
test that started it does on exit: it never outlives the test. It prints nothing per
connection; at exit it prints one JSON line of what it saw (connections, paths, headers of
the last upgrade, pongs received, close codes
by count), so a test can check what our client sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Request, Response, ServerConnection, serve


async def _main(args: argparse.Namespace) -> None:
    seen: dict[str, Any] = {"connections": 0, "paths": [], "headers": {}, "pongs": 0,
                            "subprotocol": None, "close_codes": {}}

    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        seen["headers"] = dict(request.headers.raw_items())
        if request.path not in seen["paths"]:
            seen["paths"].append(request.path)
        if args.refuse:
            return conn.respond(HTTPStatus(args.refuse), "refused by the test\n")
        return None

    async def handle(conn: ServerConnection) -> None:
        seen["connections"] += 1
        seen["subprotocol"] = conn.subprotocol
        try:
            if args.ping:
                await asyncio.wait_for(await conn.ping(b"are you there"), 10)
                seen["pongs"] += 1
            if args.close_after is not None:
                await asyncio.sleep(args.close_after)
                await conn.close(1001, "going away")
                return
            async for message in conn:
                if args.echo:
                    await conn.send(message)
        except Exception:       # a client reset is a normal end here
            pass
        finally:
            await conn.wait_closed()
            code = str(conn.close_code)
            seen["close_codes"][code] = seen["close_codes"].get(code, 0) + 1

    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls)
    async with serve(handle, "127.0.0.1", 0, process_request=process_request, ssl=ctx,
                     subprotocols=args.subprotocol or None, max_size=None, backlog=4096,
                     ping_interval=None, compression=None) as server:
        print(next(iter(server.sockets)).getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--refuse", type=int, default=0)
    parser.add_argument("--ping", action="store_true")
    parser.add_argument("--close-after", type=float, default=None)
    parser.add_argument("--tls", default=None)
    parser.add_argument("--subprotocol", action="append", default=[])
    asyncio.run(_main(parser.parse_args()))
