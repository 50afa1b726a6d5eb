"""Opens N connections to 127.0.0.1:PORT and holds them open until stdin closes.

With --request, each connection first sends one GET and reads its whole answer (so it is a
kept-alive connection idle after one request); without it, each sends nothing. Prints
"ready" once every connection is in the wanted state.
"""
import argparse
import asyncio
import sys


async def one(port, request):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if request:
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
    return writer


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--request", action="store_true")
    args = parser.parse_args()
    writers = []
    # In batches, so the proxy's accept backlog is never the limit.
    for start in range(0, args.count, 200):
        batch = range(start, min(start + 200, args.count))
        writers += await asyncio.gather(*(one(args.port, args.request) for _ in batch))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in writers:
        w.close()


asyncio.run(main())
