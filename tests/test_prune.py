"""Journal pruning: `journal.prune` and `router prune` delete old finished messages and their
histories, keep what is still in flight or dead-lettered, and keep resend keys unless asked."""
from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from router import journal
from router.db import create_schema, make_engine
from router.envelope import Envelope
from tests.support.proc import router_env, run_cli

DAY = 86400.0


def _fill(engine: sa.Engine) -> dict[str, str]:
    """status -> message id, for messages whose last change was 40 days ago, plus a fresh one."""
    old = time.time() - 40 * DAY
    ids: dict[str, str] = {}
    with engine.begin() as conn:
        for n, status in enumerate(["processed", "filtered", "duplicate", "refused", "queued", "retrying",
                                    "dead-lettered"]):
            env = Envelope(route="lab", raw=b"", sender="LIS^LAB", control_id=f"C{n}", received_at=old)
            entries = [journal.Entry(env, "queued", old), journal.Entry(env, status, old + 1)]
            journal.record(conn, entries)
            if status == "processed":
                journal.mark_processed(conn, [env])
            ids[status] = env.id
        fresh = Envelope(route="lab", raw=b"", sender="LIS^LAB", control_id="FRESH")
        journal.record(conn, [journal.entry(fresh, "processed")])
        journal.mark_processed(conn, [fresh])
        ids["fresh"] = fresh.id
    return ids


def _left(engine: sa.Engine) -> tuple[set[str], set[str], set[str]]:
    with engine.connect() as conn:
        msgs = {r[0] for r in conn.execute(sa.select(journal.messages.c.id))}
        evs = {r[0] for r in conn.execute(sa.select(journal.events.c.message_id))}
        keys = {r[0] for r in conn.execute(sa.select(journal.processed_keys.c.message_id))}
    return msgs, evs, keys


def test_prune_deletes_old_finished_messages_only(database_url: str) -> None:
    engine = make_engine(database_url)
    create_schema(engine)
    ids = _fill(engine)
    with engine.begin() as conn:
        got = journal.prune(conn, time.time() - 30 * DAY, limit=3)  # in batches of 3
    assert (got.messages, got.events, got.resend_keys) == (3, 6, 0)
    with engine.begin() as conn:
        got = journal.prune(conn, time.time() - 30 * DAY, limit=3)
    assert got.messages == 1
    with engine.begin() as conn:
        assert journal.prune(conn, time.time() - 30 * DAY).messages == 0
    msgs, evs, keys = _left(engine)
    kept = {ids[s] for s in ("queued", "retrying", "dead-lettered", "fresh")}
    assert msgs == kept and evs == kept
    assert keys == {ids["processed"], ids["fresh"]}  # a resend is still recognised
    with engine.connect() as conn:
        assert journal.already_processed(conn, [("lab", "LIS^LAB", "C0")]) == {("lab", "LIS^LAB", "C0"): ids["processed"]}
    engine.dispose()


def test_router_prune_command_with_resend_keys(tmp_path: Path, postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    create_schema(engine)
    ids = _fill(engine)
    env = router_env(ROUTER_DATABASE_URL=postgres_url)
    bad = run_cli(["prune", "--older-than", "soon"], tmp_path, env)
    assert bad.returncode == 2 and "--older-than" in bad.stderr and "Traceback" not in bad.stderr
    res = run_cli(["prune", "--older-than", "30d", "--resend-keys"], tmp_path, env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "pruned 4 messages, 8 status events, 1 resend keys"
    msgs, _, keys = _left(engine)
    assert ids["processed"] not in msgs and ids["dead-lettered"] in msgs
    assert keys == {ids["fresh"]}
    engine.dispose()
