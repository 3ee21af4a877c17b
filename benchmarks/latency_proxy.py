"""A loopback TCP proxy that adds a fixed latency to every request, as a cloud object store would.

Each client connection gets its own upstream connection. Bytes from the server pass at once; the first
bytes a client sends after the server last answered (a new request on a keep-alive connection, or the
body after `100 Continue`) wait `--latency-ms` first. So every S3 request pays the latency once per round
trip, like the 20-50 ms of a real store, while loopback keeps the bandwidth. Listens on 127.0.0.1 only.

    python benchmarks/latency_proxy.py --port 46000 --target 127.0.0.1:8333 --latency-ms 30
"""

from __future__ import annotations

import argparse
import asyncio

HOST = "127.0.0.1"
CHUNK = 256 * 1024


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, answered: list[bool]
) -> None:
    """Copies `reader` to `writer`; with `delay`, waits it before the first chunk after an answer."""
    try:
        while data := await reader.read(CHUNK):
            if delay:
                if answered[0]:
                    answered[0] = False
                    await asyncio.sleep(delay)
            else:
                answered[0] = True
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _serve(target: tuple[str, int], delay: float, port: int) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        answered = [True]  # the connection's first request waits too
        await asyncio.gather(
            _pipe(client_reader, server_writer, delay, answered),
            _pipe(server_reader, client_writer, 0.0, answered),
        )

    server = await asyncio.start_server(handle, HOST, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--target", required=True, help="HOST:PORT of the store")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="added to each request (30)")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit("latency_proxy: the target must be on the loopback interface")
    print(f"proxy 127.0.0.1:{args.port} -> {args.target}, +{args.latency_ms:g} ms a request", flush=True)
    asyncio.run(_serve((host, int(port)), args.latency_ms / 1000, args.port))


if __name__ == "__main__":
    main()
