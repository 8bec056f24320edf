"""A TLS server for tests, in its own process: asyncio with the stdlib `ssl` module.

    python -m tests.tls_peer CERT KEY [--echo]

Prints its port on the first line of stdout, then holds (or echoes) every connection until
its stdin closes, which the test that started it does on exit: it never outlives the test.
"""

from __future__ import annotations

import asyncio
import ssl
import sys


async def _main(cert: str, key: str, echo: bool) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if echo:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, backlog=4096,
                                        ssl_handshake_timeout=30)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)      # until the test closes our stdin


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], "--echo" in sys.argv[3:]))
