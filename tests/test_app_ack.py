"""Enhanced acknowledgment mode end to end with the real CLI: the commit ACK from the MLLP and HTTP
sources, then the application ACK (MSH-16) that the worker sends after processing to the route's
return address, a test MLLP listener here. On the embedded defaults and on RabbitMQ + PostgreSQL."""
from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from router import journal
from router.app_ack import ack_envelope
from router.config.loader import load_config
from router.destinations.base import DestinationContext, Output
from router.destinations.mllp import MllpDestination, MllpOptions
from router.envelope import Envelope
from router.errors import (ConfigError, DestinationRejected, DestinationUnavailable, MappingError, TransportError,
                           RejectedError)
from router.formats import hl7v2
from router.formats.ack import AckInfo, build_ack, read_ack
from router.runtime import Settled
from router.store.tables import resources
from tests.support.harness import Harness
from tests.support.hl7 import free_port, oru
from tests.support.proc import RouterProcess, router_env, run_cli

ROOT = Path(__file__).resolve().parent.parent

ROUTES = """
settings:
  plugins: [tests.support.faults]
routes:
  - name: lab
    source: {{type: mllp, port: {mllp}}}
    accept: [ORU^R01]
    mapping: tests.support.faults:to_bundle
    destinations: [store]
    application_ack:
      destination: {{type: mllp, host: 127.0.0.1, port: {back}, timeout: 2s}}
      retry: {{attempts: 30, initial_delay: 0.3, max_delay: 1, jitter: 0}}
  - name: orders
    source: {{type: mllp, port: {mllp}}}
    accept: [ORM^O01]
    mapping: tests.support.faults:to_bundle
    destinations: [store]
    application_ack:
      destination: {{type: mllp, host: 127.0.0.1, port: {nowhere}, timeout: 1s}}
      retry: {{attempts: 2, initial_delay: 0.2, jitter: 0}}
  - name: web
    source: {{type: http, path: /hl7}}
    accept: [ORU^R01]
    mapping: tests.support.faults:to_bundle
    destinations: [store]
    application_ack:
      destination: {{type: mllp, host: 127.0.0.1, port: {back}, wait_for_ack: false}}
"""


def enhanced(cid: str, accept: str = "AL", application: str = "AL", mtype: str = "ORU^R01", extra: str = "") -> bytes:
    return oru(cid, mtype=mtype, extra=extra).replace(b"|P|2.5\r", f"|P|2.5|||{accept}|{application}\r".encode())


def basic_id(cid: str) -> str:
    """The id the test mapping gives the message's resource (from OBR-2, 'ORD' + control id)."""
    return hashlib.sha1(f"ORD{cid}".encode()).hexdigest()[:16]


@dataclass
class Received:
    ack: AckInfo
    raw: bytes
    stored: bool  # the message's resource was in the store when its ACK arrived


class ReturnAddress:
    """The sender's MLLP listener for application ACKs: records every frame (and whether the
    acknowledged message's record was already in the store) and answers AA."""

    def __init__(self, port: int, stored: Callable[[str], bool]) -> None:
        self.port, self.stored = port, stored
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.conns: list[socket.socket] = []

    def start(self) -> ReturnAddress:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self.sock = s
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self.sock is not None
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\x1c\x0d" in buf:
                    frame, _, buf = buf.partition(b"\x1c\x0d")
                    raw = frame[frame.index(b"\x0b") + 1:]
                    ack = read_ack(raw)
                    with self.lock:
                        self.received.append(Received(ack, raw, self.stored(ack.control_id)))
                    conn.sendall(b"\x0b" + build_ack(hl7v2.parse_header(hl7v2.decode(raw)), "AA") + b"\x1c\x0d")
        except OSError:
            return

    def acks_for(self, control_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.ack.control_id == control_id]

    def wait_for(self, control_id: str, timeout: float = 30) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.acks_for(control_id)
            if got:
                return got[0]
            time.sleep(0.05)
        raise AssertionError(f"no application ACK for {control_id} within {timeout}s; got "
                             f"{[r.ack.control_id for r in self.received]}")

    def stop(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of its thread
            except OSError:
                pass
            self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


@dataclass
class Engine:
    proc: RouterProcess
    folder: Path
    env: dict[str, str]
    db: sa.Engine
    mllp: int
    http: int
    back: int

    def stored(self, cid: str) -> bool:
        with self.db.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(resources)
                                .where(resources.c.id == basic_id(cid))).scalar_one() > 0

    def journal(self, route: str) -> list[dict[str, Any]]:
        res = run_cli(["messages", "--route", route, "--json", "--limit", "1000"], self.folder, self.env)
        assert res.returncode == 0, res.stderr
        return [json.loads(line) for line in res.stdout.splitlines()]

    def wait_journal(self, route: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30,
                     what: str = "") -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.journal(route)
            if predicate(rows):
                return rows
            time.sleep(0.3)
        raise AssertionError(f"journal of {route}: {what} not reached; rows {rows}")

    def listener(self) -> ReturnAddress:
        return ReturnAddress(self.back, self.stored)


@pytest.fixture(scope="module", params=["embedded", "rabbitmq+postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    import uuid

    from tests.conftest import POSTGRES_URL, RABBITMQ_URL, require_service

    folder = tmp_path_factory.mktemp("app-ack")
    ports = {k: free_port() for k in ("mllp", "http", "back", "nowhere")}
    (folder / "routes.yaml").write_text(ROUTES.format(**ports))
    schema = None
    if request.param == "embedded":
        env = router_env(PYTHONPATH=str(ROOT))
        db_url = f"sqlite:///{folder}/var/router.db"
    else:
        require_service("RabbitMQ", "127.0.0.1", 5672)
        require_service("PostgreSQL", "127.0.0.1", 5432)
        schema = f"t_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        db_url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
        env = router_env(ROUTER_BROKER_URL=RABBITMQ_URL, ROUTER_DATABASE_URL=db_url,
                         ROUTER_NAMESPACE=f"t{uuid.uuid4().hex[:10]}", PYTHONPATH=str(ROOT))
    proc = RouterProcess(["run", "--http-port", str(ports["http"])], folder, env, http_port=ports["http"])
    db = sa.create_engine(db_url)
    try:
        proc.wait_healthy()
        yield Engine(proc, folder, env, db, ports["mllp"], ports["http"], ports["back"])
    finally:
        proc.kill()
        db.dispose()
        if schema is not None:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


@pytest.fixture
def back(engine: Engine) -> Iterator[ReturnAddress]:
    listener = engine.listener().start()
    yield listener
    listener.stop()


def commit_ack(port: int, message: bytes, timeout: float = 15) -> AckInfo:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"\x0b" + message + b"\x1c\x0d")
        buf = b""
        while not buf.endswith(b"\x1c\x0d"):
            chunk = s.recv(65536)
            assert chunk, "connection closed before the commit ACK"
            buf += chunk
    return read_ack(buf[1:-2])


def fields(raw: bytes, segment: str) -> list[str]:
    fs = raw[3:4].decode()
    return next(s for s in raw.decode().split("\r") if s.startswith(segment)).split(fs)


# --------------------------------------------------------------------------- MLLP


def test_commit_ack_then_application_aa_after_the_store_commit(engine: Engine, back: ReturnAddress) -> None:
    cid = f"AA-{time.monotonic_ns()}"
    commit = commit_ack(engine.mllp, enhanced(cid))
    assert (commit.code, commit.control_id) == ("CA", cid)
    got = back.wait_for(cid)
    assert got.ack.code == "AA" and got.ack.errors == ()
    assert got.stored, "the application ACK arrived before the record was in the store"
    msh = fields(got.raw, "MSH")
    # sender and receiver swapped (the message: LIS|LAB -> EHR|HOSP), the sender's version
    assert msh[2:6] == ["EHR", "HOSP", "LIS", "LAB"] and msh[11] == "2.5" and msh[8] == "ACK^R01^ACK"
    # the ACK route journals what it sent
    rows = engine.wait_journal("lab.ack", lambda rs: any(r["control_id"] == msh[9] and r["status"] == "processed"
                                                         for r in rs), what="ACK sent")
    [row] = [r for r in rows if r["control_id"] == msh[9]]
    assert row["source"].startswith("app-ack:") and row["message_type"] == "ACK^R01"


def test_a_permanent_failure_gets_ca_then_application_ae_with_err(engine: Engine, back: ReturnAddress) -> None:
    cid = f"AE-{time.monotonic_ns()}"
    commit = commit_ack(engine.mllp, enhanced(cid, extra="POISON"))
    assert commit.code == "CA"  # accepted: it is durably queued
    got = back.wait_for(cid)
    assert got.ack.code == "AE" and not got.stored
    [err] = got.ack.errors
    assert err.code == "207" and "MappingError: poison message" in err.text
    assert "MappingError" in got.ack.text
    rows = engine.journal("lab")
    assert any(r["control_id"] == cid and r["status"] == "dead-lettered" for r in rows)


def test_msh16_er_on_success_sends_no_application_ack(engine: Engine, back: ReturnAddress) -> None:
    quiet, loud = f"ER-{time.monotonic_ns()}", f"AL-{time.monotonic_ns()}"
    assert commit_ack(engine.mllp, enhanced(quiet, application="ER")).code == "CA"
    engine.wait_journal("lab", lambda rs: any(r["control_id"] == quiet and r["status"] == "processed" for r in rs),
                        what=f"{quiet} processed")
    assert commit_ack(engine.mllp, enhanced(loud)).code == "CA"  # processed after it, on the same worker
    back.wait_for(loud)
    assert back.acks_for(quiet) == []
    # ...and MSH-16 = SU with a failure: none either
    su = f"SU-{time.monotonic_ns()}"
    assert commit_ack(engine.mllp, enhanced(su, application="SU", extra="POISON")).code == "CA"
    engine.wait_journal("lab", lambda rs: any(r["control_id"] == su and r["status"] == "dead-lettered" for r in rs),
                        what=f"{su} dead-lettered")
    after = f"AL2-{time.monotonic_ns()}"
    commit_ack(engine.mllp, enhanced(after))
    back.wait_for(after)
    assert back.acks_for(su) == []


def test_a_return_address_that_is_down_is_retried_until_it_comes_up(engine: Engine) -> None:
    cid = f"DOWN-{time.monotonic_ns()}"
    assert commit_ack(engine.mllp, enhanced(cid)).code == "CA"
    rows = engine.wait_journal("lab.ack", lambda rs: any(r["status"] == "retrying" and r["attempts"] >= 2 for r in rs),
                               what="the ACK retried twice")
    assert any("cannot connect" in (r["error"] or "") for r in rows)
    listener = engine.listener().start()
    try:
        got = listener.wait_for(cid)
        assert got.ack.code == "AA" and got.stored
    finally:
        listener.stop()


def test_an_undeliverable_ack_is_dead_lettered_with_its_reason(engine: Engine) -> None:
    cid = f"DEAD-{time.monotonic_ns()}"
    assert commit_ack(engine.mllp, enhanced(cid, mtype="ORM^O01")).code == "CA"
    rows = engine.wait_journal("orders.ack", lambda rs: any(r["status"] == "dead-lettered" for r in rs),
                               what="the ACK dead-lettered")
    [dead] = [r for r in rows if r["status"] == "dead-lettered"]
    assert dead["attempts"] == 2 and "DestinationUnavailable" in dead["error"] and "cannot connect" in dead["error"]
    # the message itself was processed; its ACK waits in the ACK route's dead-letter queue
    assert any(r["control_id"] == cid and r["status"] == "processed" for r in engine.journal("orders"))
    res = run_cli(["dlq", "list", "--route", "orders.ack"], engine.folder, engine.env)
    assert res.returncode == 0 and dead["id"][:8] in res.stdout, res.stdout + res.stderr


# --------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize(("accept", "status", "code"), [("AL", 200, "CA"), ("SU", 200, "CA"), ("ER", 204, None),
                                                         ("NE", 204, None), ("", 200, "AA")])
def test_http_answers_in_enhanced_mode_when_msh15_is_set(engine: Engine, back: ReturnAddress, accept: str,
                                                         status: int, code: str | None) -> None:
    cid = f"H{accept}-{time.monotonic_ns()}"
    body = enhanced(cid, accept=accept) if accept else oru(cid)
    r = httpx.post(f"http://127.0.0.1:{engine.http}/hl7", content=body,
                   headers={"Content-Type": "x-application/hl7-v2+er7"}, timeout=15)
    assert r.status_code == status, r.text
    if code is None:
        assert r.content == b""
    else:
        ack = read_ack(r.content)
        assert (ack.code, ack.control_id) == (code, cid)
    if accept:  # MSH-16 = AL: the application ACK follows, through the route's return address
        got = back.wait_for(cid)
        assert got.ack.code == "AA" and got.stored


def test_http_refusal_in_enhanced_mode_is_cr(engine: Engine) -> None:
    cid = f"HR-{time.monotonic_ns()}"
    r = httpx.post(f"http://127.0.0.1:{engine.http}/hl7", content=enhanced(cid, mtype="ADT^A01"),
                   headers={"Content-Type": "x-application/hl7-v2+er7"}, timeout=15)
    assert r.status_code == 200
    ack = read_ack(r.content)
    assert (ack.code, ack.control_id) == ("CR", cid) and ack.errors[0].code == "200"


# --------------------------------------------------------------------------- which ACK, if any (no services)


def settled(raw: bytes, status: str = "processed", error: BaseException | None = None) -> Settled:
    env = Envelope(route="lab", raw=raw, sender="LIS|LAB", control_id="X1")
    if error is not None:
        env.record_failure(error, False)
    return Settled(env, status, error)  # type: ignore[arg-type]


@pytest.mark.parametrize(("msh16", "ok", "failed"), [
    ("AL", "AA", "AE"), ("ER", None, "AE"), ("SU", "AA", None), ("NE", None, None), ("", None, None),
    ("XX", "AA", "AE"),  # outside table 0155: as AL
])
def test_msh16_decides_whether_an_application_ack_is_sent(msh16: str, ok: str | None, failed: str | None) -> None:
    good = ack_envelope(settled(enhanced("X1", application=msh16)), "lab.ack")
    bad = ack_envelope(settled(enhanced("X1", application=msh16), "dead-lettered", MappingError("no")), "lab.ack")
    assert (read_ack(good.raw).code if good else None) == ok
    assert (read_ack(bad.raw).code if bad else None) == failed


def test_filtered_is_aa_a_refusal_is_ar_and_other_failures_ae_with_err() -> None:
    filtered = ack_envelope(settled(enhanced("X1"), "filtered"), "lab.ack")
    assert filtered is not None and read_ack(filtered.raw).code == "AA"
    refused = ack_envelope(settled(enhanced("X1"), "dead-lettered", RejectedError("not for us")), "lab.ack")
    assert refused is not None
    info = read_ack(refused.raw)
    assert info.code == "AR" and info.errors[0].code == "207" and "RejectedError: not for us" in info.errors[0].text
    gone = ack_envelope(settled(enhanced("X1"), "dead-lettered", DestinationUnavailable("db down")), "lab.ack")
    assert gone is not None and read_ack(gone.raw).code == "AE"
    assert ack_envelope(settled(b'{"resourceType": "Bundle"}'), "lab.ack") is None  # not HL7: nothing to answer


def test_the_ack_uses_the_senders_encoding_characters_and_version() -> None:
    raw = (b"MSH|#~\\&|LIS|LAB|EHR|HOSP|20240101120000||ORU#R01|V23|P|2.3.1|||AL|AL\r"
           b"PID|1||12345##HOSP#MR\r")
    env = ack_envelope(settled(raw, "dead-lettered", MappingError("bad | value")), "lab.ack")
    assert env is not None
    text = env.raw.decode()
    assert text.startswith("MSH|#~\\&|EHR|HOSP|LIS|LAB|") and "|ACK#R01#ACK|" in text and "|P|2.3.1" in text
    assert "MSA|AE|V23|" in text
    err = next(s for s in text.split("\r") if s.startswith("ERR"))
    assert err.startswith("ERR|###207&")  # before 2.5: ERR-1 ELD, components with the sender's '#'
    assert "bad \\F\\ value" in text  # the field separator in the text is escaped


def test_the_ack_id_is_stable_for_a_redelivery_and_new_for_a_replay() -> None:
    raw = enhanced("X1")
    s = settled(raw)
    first, again = ack_envelope(s, "lab.ack"), ack_envelope(s, "lab.ack")
    assert first is not None and again is not None
    assert first.id == again.id and first.control_id == again.control_id
    assert first.headers["acknowledges"] == s.envelope.id and first.source == f"app-ack:{s.envelope.id}"
    s.envelope.record_failure(MappingError("x"), False)  # dead-lettered, replayed, processed: a new ACK
    assert ack_envelope(s, "lab.ack").id != first.id  # type: ignore[union-attr]


# --------------------------------------------------------------------------- configuration errors


def test_application_ack_problems_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("""routes:
  - name: lab
    source: mllp
    accept: [ORU^R01]
    destinations: [discard]
    application_ack:
      destination: {type: store}
  - name: adt
    source: mllp
    accept: [ADT^A01]
    destinations: [discard]
    application_ack:
      destination: {type: mllp, hots: lis, port: 2577}
      retry: {attempts: 0}
  - name: orm
    source: mllp
    accept: [ORM^O01]
    destinations: [discard]
    application_ack: {destination: {type: mlp}}
  - name: orm.ack
    source: {type: http, path: /x}
    destinations: [discard]
""")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    got = [(p.line, p.message) for p in exc.value.problems]
    f = str(path)
    assert all(p.file == f for p in exc.value.problems)
    assert (7, "routes[0].application_ack.destination: the store destination cannot take application ACKs "
               "(they are HL7 messages, not FHIR resources)") in got
    assert (13, "routes[1].application_ack.destination: missing required key 'host'") in got
    assert (13, "routes[1].application_ack.destination.hots: unknown key 'hots'") in got
    assert (14, "routes[1].application_ack.retry.attempts: Input should be greater than or equal to 1 (got 0)") in got
    assert (19, "routes[2].application_ack.destination.type: unknown destination type 'mlp'") in got
    assert any(line == 19 and "internal route 'orm.ack', and a route has that name" in m for line, m in got)


def test_a_route_with_application_ack_gets_its_internal_ack_route(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("""routes:
  - name: lab
    source: mllp
    destinations: [discard]
    queue_type: quorum
    application_ack:
      destination: {type: mllp, host: lis.example, port: 2577}
      retry: {attempts: 3, initial_delay: 1s}
""")
    config = load_config(path)
    assert [(r.name, r.acknowledges) for r in config.routes] == [("lab", None), ("lab.ack", "lab")]
    ack = config.route("lab.ack")
    assert ack.source is None and ack.filter is None and ack.route.mapping is None
    assert [d.spec.name for d in ack.destinations] == ["mllp"] and ack.destinations[0].options.host == "lis.example"
    assert ack.route.retry.attempts == 3 and ack.route.queue_type == "quorum"
    res = run_cli(["check", str(path)], tmp_path)
    assert res.returncode == 0 and "OK, 1 route" in res.stdout


# --------------------------------------------------------------------------- the mllp destination


class Receiver(ReturnAddress):
    """An MLLP receiver that answers every message with a given ACK code."""

    def __init__(self, port: int, code: str) -> None:
        super().__init__(port, lambda cid: False)
        self.code = code
        self.messages: list[bytes] = []

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\x1c\x0d" in buf:
                    frame, _, buf = buf.partition(b"\x1c\x0d")
                    raw = frame[frame.index(b"\x0b") + 1:]
                    self.messages.append(raw)
                    header = hl7v2.parse_header(hl7v2.decode(raw))
                    conn.sendall(b"\x0b" + build_ack(header, self.code, "said so", error=None if self.code == "AA"
                                                     else "application-error") + b"\x1c\x0d")
        except OSError:
            return


def mllp_destination(port: int, **options: Any) -> MllpDestination:
    return MllpDestination(MllpOptions(host="127.0.0.1", port=port, timeout=2, **options),
                           DestinationContext(base_dir=".", route="t", transport=None, extra={}))


def outputs(*cids: str) -> list[Output]:
    return [Output(Envelope(route="t", raw=oru(c)), oru(c), "x-application/hl7-v2+er7") for c in cids]


@pytest.mark.parametrize(("code", "error"), [("AA", None), ("CA", None), ("AE", DestinationUnavailable),
                                             ("CE", DestinationUnavailable), ("AR", DestinationRejected),
                                             ("CR", DestinationRejected)])
def test_mllp_destination_reads_the_receivers_ack(code: str, error: type[Exception] | None) -> None:
    port = free_port()
    receiver = Receiver(port, code).start()
    try:
        dest = mllp_destination(port)
        if error is None:
            dest.write(outputs("M1", "M2"), None)
            assert [hl7v2.parse_header(hl7v2.decode(m)).control_id for m in receiver.messages] == ["M1", "M2"]
        else:
            with pytest.raises(error, match=f"answered {code}: said so"):
                dest.write(outputs("M1"), None)
    finally:
        receiver.stop()


def test_mllp_destination_without_a_receiver_is_transient() -> None:
    dest = mllp_destination(free_port())
    with pytest.raises(DestinationUnavailable, match="cannot connect"):
        dest.write(outputs("M1"), None)


# --------------------------------------------------------------------------- an ACK queued twice is sent once


def test_an_ack_queued_again_after_a_redelivery_is_sent_once(tmp_path: Path, namespace: str, sqlite_url: str) -> None:
    port = free_port()
    h = Harness(tmp_path, f"""
routes:
  - name: lab
    source: mllp
    destinations: [discard]
    application_ack:
      destination: {{type: mllp, host: 127.0.0.1, port: {port}}}
""", broker_url=None, database_url=sqlite_url, namespace=namespace)
    listener = ReturnAddress(port, lambda cid: False).start()
    try:
        h.start()
        env = h.send(enhanced("TWICE"))
        listener.wait_for("TWICE")
        lab = h.routes[0]
        [hook] = lab.on_settled
        hook([Settled(env, "processed")])  # what the hooks do when a committed batch is redelivered
        h.wait_for(lambda: list(h.statuses().values()).count("processed") == 2, what="the ACK journaled")
        ack_queue = h.routes[1].queues.work
        h.wait_for(lambda: h.transport.depth(ack_queue) == 0, what="the second copy taken")
        time.sleep(0.5)
        assert len(listener.acks_for("TWICE")) == 1
        acks = [r for r in h.statuses() if r != env.id]
        assert len(acks) == 1 and h.row(acks[0])["route"] == "lab.ack"
    finally:
        listener.stop()
        h.close()


class TlsReceiver(Receiver):
    """The same over mutual TLS: the client must present a certificate the test CA signed."""

    def __init__(self, port: int, certs: dict[str, Path]) -> None:
        super().__init__(port, "AA")
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(certs["server"]), str(certs["server.key"]))
        self.ctx.load_verify_locations(cafile=str(certs["ca"]))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.peers: list[str] = []

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            return
        subject = dict(x[0] for x in tls.getpeercert()["subject"])  # type: ignore[index]
        self.peers.append(str(subject["commonName"]))
        super()._serve(tls)


def test_mllp_destination_over_mutual_tls(tmp_path: Path) -> None:
    from tests.test_mllp import make_certs

    certs = make_certs(tmp_path / "certs")
    port = free_port()
    receiver = TlsReceiver(port, certs).start()
    try:
        tls = {"ca_file": str(certs["ca"]), "cert_file": str(certs["client"]), "key_file": str(certs["client.key"])}
        mllp_destination(port, tls=tls).write(outputs("T1"), None)
        assert receiver.peers == ["lis-client"] and len(receiver.messages) == 1
        # a certificate that does not name the expected host: transient (it may be fixed), with the reason
        other = {"ca_file": str(certs["ca"]), "server_hostname": "elsewhere.example"}
        with pytest.raises(DestinationUnavailable, match="TLS handshake failed"):
            mllp_destination(port, tls=other).write(outputs("T2"), None)
    finally:
        receiver.stop()


def test_a_hook_failure_after_the_commit_redelivers_the_batch_and_the_ack_is_sent_once(
        tmp_path: Path, namespace: str, sqlite_url: str) -> None:
    """What a crash between the commit and the ack of a batch does: the batch comes back, the
    dedupe skips it, the hooks run again; the message is processed once and its ACK sent once."""
    port = free_port()
    h = Harness(tmp_path, f"""
routes:
  - name: lab
    source: mllp
    destinations: [discard]
    application_ack:
      destination: {{type: mllp, host: 127.0.0.1, port: {port}}}
""", broker_url=None, database_url=sqlite_url, namespace=namespace)
    calls: list[int] = []

    def fails_once(settled: list[Settled]) -> None:
        calls.append(len(settled))
        if len(calls) == 1:
            raise TransportError("lost the connection after the commit")

    h.routes[0].on_settled.append(fails_once)  # after the application ACK hook: its ACK is already queued
    listener = ReturnAddress(port, lambda cid: False).start()
    try:
        h.start()
        env = h.send(enhanced("CRASH"))
        listener.wait_for("CRASH")
        h.wait_for(lambda: len(calls) >= 2, what="the hooks run again on the redelivery")
        h.wait_for(lambda: h.transport.depth(h.routes[1].queues.work) == 0, what="the ACK queue drained")
        time.sleep(0.5)
        assert len(listener.acks_for("CRASH")) == 1
        assert h.statuses()[env.id] == "processed"
        with h.engine.connect() as conn:  # processed once: one processed event, no second run
            events = conn.execute(sa.select(journal.events.c.status).where(journal.events.c.message_id == env.id))
            assert [e[0] for e in events].count("processed") == 1
    finally:
        listener.stop()
        h.close()
