#!/usr/bin/python3
"""delay-proxy.py -- loopback TCP forwarder that delays every chunk in each direction.

    delay-proxy.py --target 127.0.0.1:PORT [--listen 127.0.0.1:0] [--delay-ms 10]

Every chunk read from one side is written to the other side DELAY ms after it
was read, so one request/response round trip costs 2 x DELAY more, while any
number of chunks can be in flight (a pipelining client pays the delay once).
It does not model bandwidth, loss or congestion windows.  It stands in for
`tc qdisc ... netem delay`, which needs a kernel module and privileges.

Both addresses must be loopback addresses.  Once it listens it prints one line
on stdout, "listening HOST PORT" (PORT 0 picks a free port), and flushes it.
It stops on SIGTERM or SIGINT, or when stdin reaches end of file (so it cannot
outlive a parent that holds its stdin); then it prints the connection and byte
counts on stderr.  Python 3 standard library only.
"""

import argparse
import asyncio
import ipaddress
import signal
import socket
import sys
import threading

CHUNK = 256 * 1024     # bytes read at a time
QUEUE_CHUNKS = 64      # chunks in flight per direction before reading pauses
CONNECT_TIMEOUT = 10.0


def loopback_addr(text):
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        if not sep or not ipaddress.ip_address(host).is_loopback:
            raise ValueError
        port = int(port)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a loopback HOST:PORT" % text)
    return host, port


async def forward(reader, writer, delay, counts, key):
    """Copy reader to writer, each chunk `delay` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue(QUEUE_CHUNKS)

    async def receive():
        try:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return
        except OSError:
            await queue.put((loop.time() + delay, b""))   # pass the failure on as end of stream

    async def send():
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                counts[key] += len(data)
                await writer.drain()
        except OSError:
            pass

    await asyncio.gather(receive(), send())


async def serve_one(creader, cwriter, target, delay, counts):
    try:
        sreader, swriter = await asyncio.wait_for(asyncio.open_connection(*target), CONNECT_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as exc:
        print("delay-proxy: cannot reach %s:%d: %s" % (target[0], target[1], exc), file=sys.stderr)
        cwriter.close()
        return
    for w in (cwriter, swriter):
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    counts["connections"] += 1
    try:
        await asyncio.gather(forward(creader, swriter, delay, counts, "up"),
                             forward(sreader, cwriter, delay, counts, "down"))
    finally:
        for w in (cwriter, swriter):
            w.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=loopback_addr, default=("127.0.0.1", 0))
    ap.add_argument("--target", type=loopback_addr, required=True)
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay in each direction")
    a = ap.parse_args()
    if not 0 <= a.delay_ms <= 10000:
        ap.error("--delay-ms must be from 0 to 10000")
    counts = {"connections": 0, "up": 0, "down": 0}
    delay = a.delay_ms / 1000.0
    server = await asyncio.start_server(lambda r, w: serve_one(r, w, a.target, delay, counts),
                                        a.listen[0], a.listen[1], reuse_address=True)
    host, port = server.sockets[0].getsockname()[:2]
    print("listening %s %d" % (host, port), flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin():
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    async with server:
        await stop.wait()
    print("delay-proxy: %d connections, %d bytes up, %d bytes down" % (
        counts["connections"], counts["up"], counts["down"]), file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
