"""The raw-limit pipeline of the end-to-end measurement: the same I/O as the engine, with no
processing. A publisher (in the benchmark process) publishes persistent messages to a durable
queue with publisher confirms, pipelined (at most WINDOW unconfirmed); N consumer processes take
them with a prefetch, and per batch of 50 messages insert the same rows a message costs the store
in content (one row per resource of the mapped Bundle, its JSON precomputed, plus one journal
row) with COPY in one transaction, commit, then ack the batch (multiple=True).

    python -m router.bench.raw_pipeline consume BROKER_URL QUEUE PG_DSN ROWS_JSON_FILE [BATCH]
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

WINDOW = 256
SCHEMA_SQL = """
CREATE TABLE raw_journal (id text PRIMARY KEY, received_at double precision NOT NULL, status text NOT NULL);
CREATE TABLE raw_resources (message_id text NOT NULL, seq int NOT NULL, resource_type text NOT NULL,
                            content bytea NOT NULL, PRIMARY KEY (message_id, seq));
"""


def pg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


class Publisher(threading.Thread):
    """Publishes make(i) until `stop` is set; counts confirmed messages."""

    def __init__(self, broker_url: str, queue: str, make: Any) -> None:
        super().__init__(daemon=True)
        self.url, self.queue, self.make = broker_url, queue, make
        self.stop = threading.Event()
        self.confirmed = 0
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        import pika

        props = pika.BasicProperties(delivery_mode=2, content_type="x-application/hl7-v2+er7")
        state: dict[str, Any] = {"ch": None, "outstanding": 0}

        def fill() -> None:
            ch = state["ch"]
            if self.stop.is_set():
                if state["outstanding"] == 0:
                    conn.close()
                return
            while state["outstanding"] < WINDOW:
                ch.basic_publish("", self.queue, self.make(self.sent), props)
                self.sent += 1
                state["outstanding"] += 1

        def on_confirm(frame: Any) -> None:
            m = frame.method
            if m.multiple:
                n = m.delivery_tag - state["acked_tag"]
            else:
                n = 1
            state["acked_tag"] = max(state["acked_tag"], m.delivery_tag)
            state["outstanding"] -= n
            self.confirmed += n
            fill()

        def on_channel(ch: Any) -> None:
            state["ch"], state["acked_tag"] = ch, 0
            ch.confirm_delivery(on_confirm)
            fill()

        def on_open(c: Any) -> None:
            c.channel(on_open_callback=on_channel)

        def on_error(c: Any, exc: BaseException) -> None:
            self.error = exc
            c.ioloop.stop()

        def on_closed(c: Any, reason: BaseException) -> None:
            c.ioloop.stop()

        def watch() -> None:  # wake the loop to notice `stop`
            if self.stop.is_set() and state["ch"] is not None and state["outstanding"] == 0:
                conn.close()
                return
            conn.ioloop.call_later(0.1, watch)

        conn = pika.SelectConnection(pika.URLParameters(self.url), on_open_callback=on_open,
                                     on_open_error_callback=on_error, on_close_callback=on_closed)
        conn.ioloop.call_later(0.1, watch)
        conn.ioloop.start()


def consume(broker_url: str, queue: str, dsn: str, rows_file: str, batch: int = 50) -> None:
    import pika
    import psycopg

    template: list[tuple[str, bytes]] = [(t, c.encode()) for t, c in json.loads(open(rows_file).read())]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    db = psycopg.connect(dsn)
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=4 * batch)
    buf: list[tuple[int, str]] = []
    pid = os.getpid()

    def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
        buf.append((method.delivery_tag, f"{pid}-{method.delivery_tag}"))

    ch.basic_consume(queue, on_message)
    print("consuming", flush=True)
    while not stop.is_set():
        deadline = time.monotonic() + 0.05
        while len(buf) < batch and time.monotonic() < deadline:
            conn.process_data_events(time_limit=max(0.0, deadline - time.monotonic()))
        if not buf:
            continue
        take, rest = buf[:batch], buf[batch:]
        now = time.time()
        with db.transaction(), db.cursor() as cur:
            with cur.copy("COPY raw_journal (id, received_at, status) FROM STDIN") as cp:
                for _, mid in take:
                    cp.write_row((mid, now, "processed"))
            with cur.copy("COPY raw_resources (message_id, seq, resource_type, content) FROM STDIN") as cp:
                for _, mid in take:
                    for seq, (rtype, content) in enumerate(template):
                        cp.write_row((mid, seq, rtype, content))
        ch.basic_ack(take[-1][0], multiple=True)
        buf[:] = rest
    conn.close()
    db.close()


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "consume":
        consume(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]) if len(sys.argv) > 6 else 50)
    else:
        sys.exit(__doc__)
