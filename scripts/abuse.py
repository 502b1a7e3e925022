#!/usr/bin/env python3
"""Replays the hostile-internet attacks of the README's Security table against a collector on
loopback, and prints what it measured. Loopback only, bounded in count and time.

    scripts/abuse.py idle PORT COUNT [SECONDS]        TLS handshakes, then nothing
    scripts/abuse.py headers PORT COUNT BYTES PID     unfinished request heads; the peak RSS
    scripts/abuse.py trickle PORT                     the HTTP/2 preface, a byte every 5 s
    scripts/abuse.py h2idle PORT                      HTTP/2: one request, then idle, answering pings
    scripts/abuse.py reset PORT SECONDS               HTTP/2 rapid reset

Each run also asks a fresh client for /healthz while the attack holds its connections.
"""

import asyncio
import ssl
import struct
import sys
import time

HOST = "127.0.0.1"


def tls_context(alpn):
    # A local test against the collector's own self-signed certificate: nothing to verify.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([alpn])
    return context


async def connect(port, alpn="http/1.1", timeout=15):
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(HOST, port, ssl=tls_context(alpn), server_hostname="localhost"),
            timeout,
        )
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        return None


async def healthz(port):
    """Seconds a fresh client waits for /healthz, or None if it got no 200 within 15 s."""
    started = time.monotonic()
    while time.monotonic() - started < 15:
        pair = await connect(port, timeout=5)
        if pair:
            reader, writer = pair
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                answer = await asyncio.wait_for(reader.read(64), 5)
                writer.close()
                if answer.startswith(b"HTTP/1.1 200"):
                    return time.monotonic() - started
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                pass
        await asyncio.sleep(0.1)
    return None


async def closed(reader):
    try:
        while await reader.read(4096):
            pass
    except (OSError, ssl.SSLError):
        pass


async def open_many(port, count, alpn="http/1.1"):
    gate = asyncio.Semaphore(200)

    async def one():
        async with gate:
            return await connect(port, alpn)

    return [pair for pair in await asyncio.gather(*(one() for _ in range(count))) if pair]


async def idle(port, count, seconds=30):
    started = time.monotonic()
    pairs = await open_many(port, count)
    print(f"{count} idle TLS clients: {len(pairs)} completed the handshake "
          f"in {time.monotonic() - started:.1f} s")
    watchers = [asyncio.ensure_future(closed(reader)) for reader, _ in pairs]
    fresh = asyncio.ensure_future(healthz(port))
    while time.monotonic() - started < seconds:
        await asyncio.sleep(1)
        still = sum(1 for watcher in watchers if not watcher.done())
        print(f"  {time.monotonic() - started:5.1f} s: {still} held by the collector")
        if still == 0:
            break
    print(f"fresh client /healthz during the attack: answered after {await fresh} s")
    for _, writer in pairs:
        writer.close()


def rss(pid):
    status = open(f"/proc/{pid}/status").read()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return tuple(int(fields[key].split()[0]) // 1024 for key in ("VmRSS", "VmHWM"))


async def headers(port, count, size, pid):
    print(f"before: RSS {rss(pid)[0]} MiB")
    pairs = await open_many(port, count)
    pad = b"a" * size

    async def send(writer):
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: ")
            writer.write(pad)  # never finished: no end of line, no blank line
            await asyncio.wait_for(writer.drain(), 20)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass

    await asyncio.gather(*(send(writer) for _, writer in pairs))
    await asyncio.sleep(2)
    answered = 0
    for reader, _ in pairs:
        try:
            head = await asyncio.wait_for(reader.read(32), 0.05)
            answered += head.startswith(b"HTTP/1.1 431")
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass
    now, peak = rss(pid)
    print(f"{len(pairs)} clients sent {size} B of unfinished head: {answered} answered 431; "
          f"RSS {now} MiB, peak {peak} MiB")
    print(f"fresh client /healthz during the attack: {await healthz(port)} s")
    for _, writer in pairs:
        writer.close()


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


async def reset(port, seconds):
    """Opens HTTP/2 connections that reset each stream right after opening it."""
    # HPACK: :method GET, :scheme https, :path /healthz (literal), :authority localhost.
    block = b"\x82\x87" + b"\x44\x08/healthz" + b"\x41\x09localhost"
    started = time.monotonic()
    connections = 0
    while time.monotonic() - started < seconds:
        pair = await connect(port, "h2")
        if not pair:
            continue
        connections += 1
        reader, writer = pair
        out = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", frame(4, 0, 0)]
        for index in range(200):
            stream = 2 * index + 1
            out.append(frame(1, 0x4, stream, block))  # HEADERS, END_HEADERS, no END_STREAM
            out.append(frame(3, 0, stream, struct.pack(">I", 8)))  # RST_STREAM CANCEL
        try:
            writer.write(b"".join(out))
            await asyncio.wait_for(writer.drain(), 5)
            await asyncio.wait_for(closed(reader), 5)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass
        writer.close()
    print(f"rapid reset: {connections} connections in {seconds} s")
    print(f"fresh client /healthz after the attack: {await healthz(port)} s")


async def trickle(port):
    reader, writer = await connect(port, "h2")
    started = time.monotonic()

    async def send():
        for byte in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(5)

    sender = asyncio.ensure_future(send())
    await asyncio.wait_for(closed(reader), 150)
    sender.cancel()
    print(f"HTTP/2 preface trickled a byte every 5 s: closed after {time.monotonic() - started:.1f} s")


async def h2idle(port):
    """One request, then nothing but answers to the collector's SETTINGS and PINGs."""
    reader, writer = await connect(port, "h2")
    block = b"\x82\x87" + b"\x44\x08/healthz" + b"\x41\x09localhost"
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
    started = time.monotonic()
    goaway = None
    try:
        while True:
            head = await asyncio.wait_for(reader.readexactly(9), 600)
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            payload = await reader.readexactly(length)
            if kind == 4 and not flags & 1:
                writer.write(frame(4, 1, 0))  # SETTINGS ACK
            elif kind == 6 and not flags & 1:
                writer.write(frame(6, 1, 0, payload))  # PING ACK
            elif kind == 7 and goaway is None:
                goaway = time.monotonic() - started
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ssl.SSLError):
        pass
    shown = "never" if goaway is None else f"after {goaway:.1f} s"
    print(f"idle HTTP/2 answering pings: GOAWAY {shown}, "
          f"closed after {time.monotonic() - started:.1f} s")


def main():
    attack, port, *rest = sys.argv[1:]
    port = int(port)
    if attack == "idle":
        asyncio.run(idle(port, int(rest[0]), *(int(x) for x in rest[1:])))
    elif attack == "headers":
        asyncio.run(headers(port, int(rest[0]), int(rest[1]), int(rest[2])))
    elif attack == "trickle":
        asyncio.run(trickle(port))
    elif attack == "h2idle":
        asyncio.run(h2idle(port))
    elif attack == "reset":
        asyncio.run(reset(port, int(rest[0])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
