"""`router send` (the MLLP client) against a running `router run` on the embedded defaults: files
with several messages and LF line ends, folders, stdin, FHS/BHS batches, exit codes on AR, on a
receiver that never answers and on a refused connection, enhanced-mode messages, TLS and mutual TLS."""
from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hl7 import free_port
from tests.support.proc import ROUTER, RouterProcess, router_env
from tests.test_mllp import make_certs

ROUTES = """
routes:
  - name: lab
    source: {{type: mllp, port: {plain}}}
    accept: [ORU^R01]
    destinations: [{{type: file, path: out/lab}}]
  - name: adt
    source: {{type: mllp, port: {plain}}}
    accept: ["ADT^*"]
    destinations: [discard]
  - name: tls
    source: {{type: mllp, port: {tls}, tls: {{cert_file: certs/server.pem, key_file: certs/server.key}}}}
    accept: [ORU^R01]
    destinations: [discard]
  - name: mtls
    source:
      type: mllp
      port: {mtls}
      tls: {{cert_file: certs/server.pem, key_file: certs/server.key, ca_file: certs/ca.pem}}
    accept: [ORU^R01]
    destinations: [discard]
"""


def msg(cid: str, mtype: str = "ORU^R01", ack: str = "") -> str:
    """One message with LF line ends (as a file on disk would have it)."""
    tail = f"|||{ack}" if ack else ""
    return (f"MSH|^~\\&|LIS|LAB|EHR|HOSP|20240101120000||{mtype}|{cid}|P|2.5{tail}\n"
            f"PID|1||12345^^^HOSP^MR||TEST^PATIENT\nOBR|1|ORD{cid}\nOBX|1|NM|GLU^Glucose^L||5.4|mmol/L|||||F\n")


class Env:
    def __init__(self, folder: Path, ports: dict[str, int], certs: dict[str, Path]) -> None:
        self.folder, self.ports, self.certs = folder, ports, certs

    def send(self, *args: str, stdin: str | None = None, cwd: Path | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([ROUTER, "send", *args], cwd=cwd or self.folder, env=router_env(), input=stdin,
                             capture_output=True, text=True, timeout=timeout)
        assert "Traceback" not in res.stderr + res.stdout, res.stderr
        return res

    def plain(self) -> list[str]:
        return ["--port", str(self.ports["plain"]), "--timeout", "20"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("send")
    certs = make_certs(folder / "certs")
    ports = {k: free_port() for k in ("plain", "tls", "mtls", "http")}
    (folder / "routes.yaml").write_text(ROUTES.format(**ports))
    proc = RouterProcess(["run", "--http-port", str(ports["http"])], folder, router_env(), http_port=ports["http"])
    try:
        proc.wait_healthy()
        yield Env(folder, ports, certs)
    finally:
        proc.kill()


def lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    return res.stdout.splitlines()


def written(env: Env, cid: str, timeout: float = 20) -> bytes:
    """The raw message the lab route's file destination wrote for this control id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f in (env.folder / "out/lab").glob("*"):
            data = f.read_bytes()
            if f"|{cid}|".encode() in data:
                return data
        time.sleep(0.1)
    raise AssertionError(f"{cid} not written")


def test_a_file_with_three_messages_and_lf_line_ends(env: Env) -> None:
    (env.folder / "three.hl7").write_text(msg("F1") + msg("F2") + "\n\n" + msg("F3", mtype="ADT^A01"))
    res = env.send("three.hl7", *env.plain())
    assert res.returncode == 0, res.stderr
    assert lines(res) == ["three.hl7:1 F1 AA", "three.hl7:2 F2 AA", "three.hl7:3 F3 AA"]
    assert "3 message(s): 3 accepted, 0 not" in res.stderr
    raw = written(env, "F2")  # sent with CR between segments, one message per frame
    assert b"\n" not in raw and raw.count(b"\r") == 4 and raw.count(b"MSH") == 1


def test_messages_separated_by_blank_lines_only(env: Env) -> None:
    # a message not starting with MSH after a blank line is still sent, and refused by the receiver
    (env.folder / "blank.hl7").write_text(msg("B1") + "\n" + "PID|1||x\n\n" + msg("B2"))
    res = env.send("blank.hl7", *env.plain())
    assert res.returncode == 1
    out = lines(res)
    assert out[0] == "blank.hl7:1 B1 AA" and out[2] == "blank.hl7:3 B2 AA"
    assert out[1] == "blank.hl7:2 - AR message is not HL7 v2 (it must start with MSH) [ERR MSH^1 207 Application internal error]"


def test_a_folder(env: Env) -> None:
    d = env.folder / "batchdir"
    (d / "sub").mkdir(parents=True)
    (d / "b.hl7").write_text(msg("D3"))
    (d / "a.hl7").write_text(msg("D1") + msg("D2"))
    (d / ".hidden").write_text(msg("HIDDEN"))
    (d / "sub" / "c.hl7").write_text(msg("SUB"))
    res = env.send("batchdir", *env.plain())
    assert res.returncode == 0, res.stderr
    assert lines(res) == ["batchdir/a.hl7:1 D1 AA", "batchdir/a.hl7:2 D2 AA", "batchdir/b.hl7:1 D3 AA"]


def test_stdin(env: Env) -> None:
    res = env.send(*env.plain(), stdin=msg("I1") + msg("I2"))
    assert res.returncode == 0, res.stderr
    assert lines(res) == ["<stdin>:1 I1 AA", "<stdin>:2 I2 AA"]
    res = env.send("-", *env.plain(), stdin=msg("I3").replace("\n", "\r\n"))
    assert lines(res) == ["<stdin>:1 I3 AA"]


def test_a_batch_file_is_split_into_its_messages(env: Env) -> None:
    batch = ("FHS|^~\\&|LIS|LAB|EHR|HOSP|20240101120000\nBHS|^~\\&|LIS|LAB|EHR|HOSP|20240101120000\n"
             + msg("BA1") + msg("BA2") + "BTS|2\nFTS|1\n")
    (env.folder / "batch.hl7").write_text(batch)
    res = env.send("batch.hl7", *env.plain())
    assert res.returncode == 0, res.stderr
    assert lines(res) == ["batch.hl7:1 BA1 AA", "batch.hl7:2 BA2 AA"]
    raw = written(env, "BA2")
    assert not any(s in raw for s in (b"FHS", b"BHS", b"BTS", b"FTS"))


def test_a_refused_message_makes_the_exit_status_non_zero(env: Env) -> None:
    (env.folder / "mixed.hl7").write_text(msg("R1") + msg("R2", mtype="ZZZ^Z01") + msg("R3"))
    res = env.send("mixed.hl7", *env.plain())
    assert res.returncode == 1
    out = lines(res)
    assert out[0] == "mixed.hl7:1 R1 AA" and out[2] == "mixed.hl7:3 R3 AA"  # the rest is still sent
    assert out[1] == ("mixed.hl7:2 R2 AR no route accepts message type ZZZ^Z01 here "
                      "[ERR MSH^1^9 200 Unsupported message type]")
    assert "3 message(s): 2 accepted, 1 not (ACK codes: AA 2, AR 1)" in res.stderr


def test_enhanced_mode_messages(env: Env) -> None:
    (env.folder / "enh.hl7").write_text(msg("EA", ack="AL") + msg("EE", ack="ER") + msg("EN", ack="NE")
                                        + msg("ES", ack="SU") + msg("ER2", mtype="ZZZ^Z01", ack="ER"))
    res = env.send("enh.hl7", *env.plain(), "--er-wait", "0.5")
    assert res.returncode == 1
    out = lines(res)
    assert out[:4] == ["enh.hl7:1 EA CA", "enh.hl7:2 EE - no ACK within 0.5s (MSH-15 ER: accepted)",
                       "enh.hl7:3 EN - no ACK requested (MSH-15 NE)", "enh.hl7:4 ES CA"]
    assert out[4].startswith("enh.hl7:5 ER2 CR no route accepts")


def test_several_connections(env: Env) -> None:
    (env.folder / "many.hl7").write_text("".join(msg(f"P{i}") for i in range(40)))
    res = env.send("many.hl7", *env.plain(), "--connections", "4")
    assert res.returncode == 0, res.stderr
    assert sorted(lines(res)) == sorted(f"many.hl7:{i + 1} P{i} AA" for i in range(40))


class SilentServer:
    """Accepts MLLP connections and reads everything, but never answers."""

    def __init__(self) -> None:
        self.port = 0
        self.received = 0
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                self.received += data.count(b"\x1c\x0d")
            writer.close()

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()
            async with server:
                await server.serve_forever()

        try:
            self.loop.run_until_complete(main())
        except RuntimeError:
            pass  # stopped

    def __enter__(self) -> SilentServer:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_no_ack_within_the_timeout(env: Env) -> None:
    (env.folder / "silent.hl7").write_text(msg("T1") + msg("T2") + msg("T3"))
    with SilentServer() as silent:
        t0 = time.monotonic()
        res = env.send("silent.hl7", "--port", str(silent.port), "--timeout", "1")
        assert time.monotonic() - t0 < 15
        assert silent.received == 1  # the run stops at the first timeout
    assert res.returncode == 1 and res.stdout == ""
    err = res.stderr.splitlines()
    assert err[0] == f"router send: silent.hl7:1 T1: no ACK within 1s from 127.0.0.1:{silent.port}"
    assert "0 accepted, 1 not, 2 not sent" in err[-1]


def test_nothing_listening(env: Env) -> None:
    (env.folder / "one.hl7").write_text(msg("N1"))
    port = free_port()
    res = env.send("one.hl7", "--port", str(port), "--timeout", "5")
    assert res.returncode == 1
    assert res.stderr.splitlines()[0].startswith(f"router send: one.hl7:1 N1: cannot connect to 127.0.0.1:{port}: ")
    assert "Connection refused" in res.stderr


def test_usage_errors(env: Env) -> None:
    res = env.send("no-such-file.hl7", *env.plain())
    assert res.returncode == 1 and "cannot read no-such-file.hl7" in res.stderr
    (env.folder / "empty.hl7").write_text("\n\n")
    res = env.send("empty.hl7", *env.plain())
    assert res.returncode == 1 and "empty.hl7: no HL7 messages in it" in res.stderr and "nothing to send" in res.stderr


def test_tls(env: Env) -> None:
    (env.folder / "tls.hl7").write_text(msg("TLS1"))
    port = ["--port", str(env.ports["tls"]), "--timeout", "10"]
    res = env.send("tls.hl7", *port, "--ca-file", str(env.certs["ca"]))
    assert res.returncode == 0, res.stderr
    assert lines(res) == ["tls.hl7:1 TLS1 AA"]
    res = env.send("tls.hl7", *port, "--insecure")
    assert lines(res) == ["tls.hl7:1 TLS1 AA"]
    # the system CAs do not know the test CA
    res = env.send("tls.hl7", *port, "--tls")
    assert res.returncode == 1 and "TLS handshake with 127.0.0.1" in res.stderr and "CERTIFICATE_VERIFY_FAILED" in res.stderr
    # plain MLLP to a TLS listener gets no ACK
    res = env.send("tls.hl7", *port)
    assert res.returncode == 1 and "tls.hl7:1 TLS1:" in res.stderr


def test_mutual_tls(env: Env) -> None:
    (env.folder / "mtls.hl7").write_text(msg("MT1"))
    port = ["--port", str(env.ports["mtls"]), "--timeout", "10", "--ca-file", str(env.certs["ca"])]
    res = env.send("mtls.hl7", *port, "--cert-file", str(env.certs["client"]), "--key-file", str(env.certs["client.key"]))
    assert res.returncode == 0, res.stderr
    assert lines(res) == ["mtls.hl7:1 MT1 AA"]
    res = env.send("mtls.hl7", *port)  # no client certificate
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines()[0].startswith("router send: mtls.hl7:1 MT1: connection lost before the ACK")
    assert "may require a client certificate" in res.stderr
    res = env.send("mtls.hl7", *port, "--cert-file", str(env.certs["stranger"]),
                   "--key-file", str(env.certs["stranger.key"]))
    assert res.returncode == 1 and res.stdout == ""
