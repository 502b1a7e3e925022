#!/usr/bin/env python3
"""A telemetry relay for tracks-collector: game clients post their events here; the relay adds
each player's address, keeps the events in a queue file on disk and delivers them to the
collector's /measure until they are stored. Python 3 standard library only: a reference for a
studio to adapt, not a product.

Client API (plain HTTP: TLS belongs to the load balancer in front of it):

  POST /events   a JSON object (one event) or an array of 1 to 100, or one event as a form
                 (application/x-www-form-urlencoded), with the collector's field names:
                 user_id and event_name (required), event_id, timestamp or time_stamp,
                 platform, storefront; no ip, the relay sets it. Answers
                 202 {"queued": n}                       synced to the queue file: do not resend
                 400 {"error": code, "message": "..."}   not events; nothing was queued
                 411, 413, 503 (with Retry-After)         nothing was queued; 503: resend later
  GET /healthz   200 {"queued": n}, the events waiting for delivery

Each event gets, once, as it is queued: `ip` (the socket peer, or with --trust-forwarded the
first X-Forwarded-For entry), `event_id` (a new UUID when the client sent none, so that the
relay's own retries are counted once) and `timestamp` (the receive time when the client sent
none, so that a late delivery keeps the event's time).

Delivery: batches of up to 100 as a JSON array to {collector}/measure. 200: deleted from the
queue. 429, 5xx, network errors: retried with exponential backoff and jitter (1 s doubling up
to --max-backoff), at least Retry-After. 401, 403 and other 4xx are configuration errors: the
events are kept, an error is logged, and it backs off (the key file is read again every
attempt, so a rotated key needs no restart). 400, 413, 415: the batch is all-or-nothing, so
its events are sent one by one, and only those refused are dropped and logged.

Routing: each batch holds the events of one player address only, and names that address in a
`Tracks-Route` header, so that a load balancer in front of several collectors sends it to the
node that holds the visits from that address, where the events can be linked to them
(packaging/haproxy.cfg; docs/operations.md, "More than one server").
"""

import argparse
import http.client
import http.server
import ipaddress
import json
import logging
import os
import random
import signal
import socket
import sqlite3
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

EXAMPLE = """example:
  echo "$MEASURE_KEY" > measure.key && chmod 600 measure.key
  python3 relay.py --collector https://collect.studio.example --key-file measure.key \\
      --listen 0.0.0.0:8787 --queue /var/lib/tracks-relay/queue.sqlite3 --trust-forwarded
  curl http://127.0.0.1:8787/events \\
      -d '{"user_id": "5f2b9c", "event_name": "game_open", "platform": "windows"}'
"""

MAX_BODY = 64 * 1024
MAX_EVENTS = 100
# The collector takes 64 KiB per request; a batch of long events is cut below that.
MAX_BATCH_BYTES = 60 * 1024
FIELDS = {"user_id", "event_name", "event_id", "timestamp", "time_stamp", "platform", "storefront"}
# The collector will never take such an event as it is: resend one by one, drop the refused.
BAD_EVENTS = {400, 413, 415}

log = logging.getLogger("tracks-relay")


class Refused(Exception):
    """A client's request that is not events: answered 400 with this code and message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class Queue:
    """Events waiting for delivery, one JSON text per row, in a SQLite file synced on commit."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a 202 must survive a power cut
        self.db.execute("PRAGMA secure_delete=ON")  # delivered addresses leave the file
        self.db.execute("CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY, event TEXT NOT NULL)")

    def push(self, events):
        with self.lock, self.db:
            self.db.executemany("INSERT INTO queue (event) VALUES (?)", [(json.dumps(e),) for e in events])

    def oldest(self, limit):
        with self.lock:
            return self.db.execute("SELECT id, event FROM queue ORDER BY id LIMIT ?", (limit,)).fetchall()

    def delete(self, ids):
        with self.lock, self.db:
            self.db.executemany("DELETE FROM queue WHERE id = ?", [(i,) for i in ids])

    def count(self):
        with self.lock:
            return self.db.execute("SELECT count(*) FROM queue").fetchone()[0]

    def truncate_log(self):
        """Once the queue is empty, the write-ahead log's copies of the events go too."""
        with self.lock:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def parse_events(body, content_type):
    """The events of a client's body, checked only as far as the relay needs them."""
    # `curl -d` labels JSON as a form too: a form never starts with { or [.
    form = content_type.startswith("application/x-www-form-urlencoded")
    if form and not body.lstrip().startswith((b"{", b"[")):
        try:
            pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, errors="strict")
        except ValueError:  # UnicodeDecodeError included
            raise Refused("invalid_form", "the form is not UTF-8")
        value = dict(pairs)
        if len(value) != len(pairs):
            raise Refused("duplicate_field", "a field appears more than once")
    else:
        try:
            value = json.loads(body)
        except ValueError:
            raise Refused("invalid_json", "the body must be JSON (an event object or an array) or a form")
    events = value if isinstance(value, list) else [value]
    if not 1 <= len(events) <= MAX_EVENTS:
        raise Refused("invalid_batch", f"send 1 to {MAX_EVENTS} events")
    for index, event in enumerate(events):
        where = f"events[{index}]" if isinstance(value, list) else "the event"
        if not isinstance(event, dict):
            raise Refused("invalid_json", f"{where} must be a JSON object")
        unknown = sorted(set(event) - FIELDS)
        if unknown:
            raise Refused("unknown_field", f"{where}: unknown field {unknown[0]!r}; expected one of "
                          f"{', '.join(sorted(FIELDS))} (the relay sets ip itself)")
        for name in ("user_id", "event_name"):
            if event.get(name) in (None, ""):
                raise Refused("missing_field", f"{where}: {name} is required")
    return events


def prepared(event, ip, now):
    """The event as it is queued: with the player's address, an id and a time, made once."""
    event = dict(event, ip=ip)
    if event.get("event_id") is None:
        event["event_id"] = str(uuid.uuid4())
    if event.get("timestamp") is None and event.get("time_stamp") is None:
        event.pop("time_stamp", None)
        event["timestamp"] = now
    return event


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version, sys_version = "tracks-relay", ""
    timeout = 30  # an idle keep-alive connection holds a thread

    def log_message(self, format, *args):
        pass  # the default writes every client's address to stderr

    def answer(self, status, body, close=False, retry_after=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after:
            self.send_header("Retry-After", str(retry_after))
        if close:  # the body was not read: the connection cannot carry another request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/healthz":
            return self.answer(404, {"error": "not_found", "message": "POST /events, GET /healthz"})
        self.answer(200, {"queued": self.server.queue.count()})

    def do_POST(self):
        if self.path != "/events":
            return self.answer(404, {"error": "not_found", "message": "POST /events"}, close=True)
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            refusal = {"error": "length_required", "message": "send a Content-Length"}
            return self.answer(411, refusal, close=True)
        if int(length) > MAX_BODY:
            refusal = {"error": "body_too_large", "message": f"at most {MAX_BODY} bytes"}
            return self.answer(413, refusal, close=True)
        body = self.rfile.read(int(length))
        try:
            events = parse_events(body, self.headers.get("Content-Type", ""))
            ip = self.client_ip()
        except Refused as refused:
            return self.answer(400, {"error": refused.code, "message": refused.message})
        now = int(time.time())
        events = [prepared(event, ip, now) for event in events]
        try:
            self.server.queue.push(events)
        except sqlite3.Error as err:  # a full disk: the client keeps the events and resends
            log.error("cannot queue events: %s", err)
            return self.answer(503, {"error": "queue_unavailable", "message": "resend later"}, retry_after=5)
        self.server.wake.set()
        self.answer(202, {"queued": len(events)})

    def client_ip(self):
        peer = self.client_address[0]
        if self.server.trust_forwarded:
            # The load balancer must set this header, not append to the client's own.
            peer = self.headers.get("X-Forwarded-For", "").split(",")[0].strip() or peer
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            raise Refused("invalid_forwarded_for", "X-Forwarded-For must start with the client's IP address")
        return str(getattr(address, "ipv4_mapped", None) or address)


class Server(http.server.ThreadingHTTPServer):
    def __init__(self, host, port, queue, wake, trust_forwarded):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), Handler)
        self.queue, self.wake, self.trust_forwarded = queue, wake, trust_forwarded


class Sender(threading.Thread):
    """Drains the queue to the collector, oldest first, and never loses an event it cannot place."""

    def __init__(self, queue, args, context, stop, wake):
        super().__init__(name="sender", daemon=True)
        self.queue, self.context, self.stop, self.wake = queue, context, stop, wake
        self.url = args.collector.rstrip("/") + "/measure"
        self.key_file, self.max_backoff = args.key_file, args.max_backoff
        self.failures, self.problem, self.failing_since = 0, None, 0.0
        self.sent = 0  # delivered since the queue was last empty
        self.catching_up = queue.count() > 0  # after a failure or a start with events left

    def run(self):
        while not self.stop.is_set():
            self.wake.clear()  # before reading, so that an event queued meanwhile wakes us again
            rows = self.queue.oldest(MAX_EVENTS)
            if not rows:
                if self.sent:
                    self.queue.truncate_log()
                if self.catching_up:
                    log.info("queue empty again: %d events delivered", self.sent)
                self.sent, self.catching_up = 0, False
                self.wake.wait()
                continue
            delay = self.deliver(rows)
            if delay:
                self.stop.wait(delay)

    def deliver(self, rows):
        """Sends one batch, the oldest events of the oldest event's player address (the others
        wait for a batch of their own); the seconds to wait before the next attempt (0: go on
        at once)."""
        batch, size, route = [], 0, None
        for row_id, text in rows:
            event = json.loads(text)
            if batch and event.get("ip") != route:
                continue
            if batch and size + len(text) > MAX_BATCH_BYTES:
                break
            route = event.get("ip")
            batch.append((row_id, event))
            size += len(text) + 1
        status, retry_after, code, message = self.post([event for _, event in batch], route)
        if 200 <= status < 300:
            self.delivered(row_id for row_id, _ in batch)
            return 0
        if status not in BAD_EVENTS:
            return self.failed(status, retry_after, code, message)
        log.info("a batch of %d was refused (%d %s): sending its events one by one",
                 len(batch), status, code)
        for index, (row_id, event) in enumerate(batch):
            status, retry_after, code, message = self.post(event, route)
            if status in BAD_EVENTS:
                # The collector's messages name the field, never the user id or the address.
                log.warning("dropped queued event %d (index %d of its batch): %d %s: %s",
                            row_id, index, status, code, message)
                self.queue.delete([row_id])
            elif 200 <= status < 300:
                self.delivered([row_id])
            else:
                return self.failed(status, retry_after, code, message)
        return 0

    def delivered(self, ids):
        ids = list(ids)
        self.queue.delete(ids)
        if self.failures:
            log.info("delivering again after %d failed attempts in %.0f s", self.failures,
                     time.monotonic() - self.failing_since)
            self.failures, self.problem = 0, None
        self.sent += len(ids)
        log.debug("delivered %d events", len(ids))

    def failed(self, status, retry_after, code, message):
        if not self.failures:
            self.failing_since = time.monotonic()
        self.failures += 1
        self.catching_up = True
        backoff = min(self.max_backoff, 2 ** min(self.failures - 1, 30))
        delay = max(random.uniform(backoff / 2, backoff), min(retry_after or 0, self.max_backoff))
        problem = "network" if status == 0 else f"{status} {code}"
        if problem != self.problem:  # one line per change of state, not per attempt
            self.problem = problem
            queued = self.queue.count()
            if status in (0, 408, 429) or status >= 500:
                log.warning("cannot deliver (%s: %s); events queued: %d, retrying with backoff",
                            problem, message, queued)
            elif status in (401, 403):
                log.error("no valid measure key (%s: %s): check --key-file; "
                          "events kept in the queue: %d, retrying with backoff", problem, message, queued)
            else:
                log.error("the collector refuses the requests (%s: %s): check --collector; "
                          "events kept in the queue: %d, retrying with backoff", problem, message, queued)
        log.debug("attempt %d failed (%s); next in %.1f s", self.failures, problem, delay)
        return delay

    def post(self, payload, route):
        """(status, retry_after, code, message) of one POST; status 0 when no answer came.
        `route` is the player address the load balancer routes by (None: the relay's own)."""
        try:
            with open(self.key_file) as file:
                key = file.read().strip()
        except OSError as err:
            return 401, None, "key_file", f"cannot read the key file: {err.strerror}"
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if route:
            headers["Tracks-Route"] = route
        request = urllib.request.Request(self.url, json.dumps(payload).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.context) as response:
                response.read()
                return response.status, None, "", ""
        except urllib.error.HTTPError as err:
            try:
                body = json.loads(err.read())
                code, message = body.get("error", ""), body.get("message", "")
            except (ValueError, AttributeError, OSError):
                code, message = "", err.reason
            retry_after = err.headers.get("Retry-After", "")
            return err.code, int(retry_after) if retry_after.isdigit() else None, code, message
        except (OSError, http.client.HTTPException) as err:  # refused, reset, timeout, TLS
            return 0, None, "", str(getattr(err, "reason", err))


def main():
    parser = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    flag = parser.add_argument
    flag("--collector", required=True, help="the collector's base URL, e.g. https://collect.studio.example")
    flag("--key-file", required=True,
         help="a file holding the game's measure key (not an argument, which ps shows to every user)")
    flag("--cafile", help="PEM certificates to trust for the collector, besides the system's")
    flag("--listen", default="127.0.0.1:8787", help="HOST:PORT for game clients (default %(default)s)")
    flag("--queue", default="relay-queue.sqlite3", help="the queue file (default %(default)s)")
    flag("--trust-forwarded", action="store_true",
         help="take the client's address from X-Forwarded-For (behind a load balancer that sets it)")
    flag("--max-backoff", type=float, default=300,
         help="longest wait between attempts, in seconds (default %(default)s)")
    flag("--verbose", action="store_true", help="log every delivery and failed attempt")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not args.collector.startswith(("https://", "http://")):
        parser.error("--listen takes HOST:PORT and --collector an http(s) URL")
    try:
        with open(args.key_file) as file:
            if not file.read().strip():
                parser.error(f"{args.key_file} is empty")
        context = ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as err:
        parser.error(str(err))

    os.umask(0o077)  # the queue holds addresses and user ids until they are delivered
    queue = Queue(args.queue)
    stop, wake = threading.Event(), threading.Event()
    server = Server(host, int(port), queue, wake, args.trust_forwarded)
    sender = Sender(queue, args, context, stop, wake)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="server", daemon=True).start()
    log.info("listening on http://%s:%d/events, delivering to %s; events queued in %s: %d",
             f"[{host}]" if ":" in host else host, server.server_address[1], sender.url, args.queue, queue.count())
    sender.start()
    while not stop.wait(1):
        pass
    server.shutdown()
    server.server_close()
    wake.set()
    sender.join(timeout=35)  # an attempt in flight ends within its timeout
    log.info("stopped; events queued for the next start: %d", queue.count())


if __name__ == "__main__":
    main()
