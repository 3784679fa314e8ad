"""Intake: the journal writer (received side) on real databases."""
from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy import event

from router import journal
from router.db import create_schema, make_engine
from router.envelope import Envelope
from router.intake import JournalWriter


def _entries(n: int, tag: str) -> list[journal.Entry]:
    out = []
    for i in range(n):
        env = Envelope(route="lab", raw=b"MSH|...", source="test", sender="LAB^X", control_id=f"{tag}-{i}")
        out.append(journal.entry(env, "queued", message_type="ORU^R01"))
    return out


def _count(engine: sa.Engine, tag: str) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(journal.messages)
                             .where(journal.messages.c.control_id.like(f"{tag}-%"))).scalar_one())


def test_journal_writer_writes_every_entry_in_few_transactions(database_url: str) -> None:
    engine = make_engine(database_url)
    create_schema(engine)
    commits = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    writer = JournalWriter(engine, linger=0.2)
    for e in _entries(600, "a"):
        writer.put(e)
    writer.close()  # flushes what is queued
    assert _count(engine, "a") == 600
    assert 1 <= len(commits) <= 3  # batched, not a transaction per message
    engine.dispose()


def test_journal_writer_survives_a_lost_connection(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    create_schema(engine)
    writer = JournalWriter(engine, linger=0.01)
    for e in _entries(10, "b"):
        writer.put(e)
    deadline = time.monotonic() + 10
    while _count(engine, "b") < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _count(engine, "b") == 10
    assert writer._conn is not None
    pid = writer._conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
    with engine.connect() as c:  # the server drops the writer's kept connection
        c.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        c.commit()
    for e in _entries(10, "c"):
        writer.put(e)
    writer.close()
    assert _count(engine, "c") == 10  # written on a new connection, nothing dropped
    engine.dispose()


def test_future_bridge_delivers_completions_from_other_threads_and_times_out() -> None:
    import asyncio
    import threading
    from concurrent.futures import Future

    import pytest

    from router.errors import TransportError
    from router.transport import aio

    async def main() -> None:
        bridge = aio.FutureBridge(asyncio.get_running_loop())
        futs: list[Future[None]] = [Future() for _ in range(500)]
        waits = [bridge.wait(f, 30) for f in futs]

        def complete() -> None:  # like a group commit: all at once, on the transport's thread
            for i, f in enumerate(futs):
                if i == 7:
                    f.set_exception(TransportError("nack"))
                else:
                    f.set_result(None)

        threading.Thread(target=complete).start()
        results = await asyncio.gather(*waits, return_exceptions=True)
        assert [i for i, r in enumerate(results) if r is not None] == [7]
        assert isinstance(results[7], TransportError)
        assert not bridge._pending  # nothing left for the timeout sweep

        never: Future[None] = Future()
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(TransportError, match="not confirmed durable within"):
            await bridge.wait(never, 0.2)
        assert asyncio.get_running_loop().time() - t0 < 2.5

        late: Future[None] = Future()
        w = bridge.wait(late, 30)
        w.cancel()  # the connection went away before the confirm
        late.set_result(None)
        await asyncio.sleep(0.05)  # the late completion is ignored, not an InvalidStateError
        assert not bridge._pending

    asyncio.run(main())


def test_received_rows_match_record_and_never_downgrade(database_url: str) -> None:
    engine = make_engine(database_url)
    create_schema(engine)
    done, fresh = _entries(2, "d")
    refused_env = Envelope(route="-", raw=b"", source="mllp:1.2.3.4:5", sender="", control_id="d-r")
    refused = journal.entry(refused_env, "refused", error="InputError: not HL7 'quoted' \\ \u00e9")
    with engine.begin() as c:  # a worker processed the first before intake's row arrives
        journal.record(c, [journal.entry(done.envelope, "processed", message_type="ORU^R01")])
    with engine.begin() as c:
        journal.record_received(c, [done, fresh, refused])
    with engine.connect() as c:
        rows = {r.control_id: r for r in c.execute(sa.select(journal.messages))}
        assert rows["d-0"].status == "processed"  # not moved back to queued
        assert rows["d-1"].status == "queued" and rows["d-1"].message_type == "ORU^R01"
        assert rows["d-1"].received_at == fresh.envelope.received_at  # float round trip is exact
        assert (rows["d-1"].id, rows["d-1"].route, rows["d-1"].sender, rows["d-1"].source) == (
            fresh.envelope.id, "lab", "LAB^X", "test")
        assert rows["d-r"].status == "refused" and rows["d-r"].error == refused.error
        statuses = {(h["status"], h["detail"]) for h in journal.history(c, fresh.envelope.id)}
        assert statuses == {("queued", None)}
        assert sorted(h["status"] for h in journal.history(c, done.envelope.id)) == ["processed", "queued"]
    engine.dispose()
