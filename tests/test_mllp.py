"""The MLLP listener through the real `router run` (embedded defaults): framing edge cases, many
concurrent connections with per-connection ACK order, size limit, idle timeout, the ACK contract
(original and enhanced mode, receiver check, the sender's encoding characters and version, ERR),
resends, TLS and mutual TLS with certificates generated here."""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router.envelope import Envelope
from router.formats.ack import build_ack, read_ack
from router.formats.hl7v2 import parse_header
from tests.support.hl7 import ack_code, free_port, mllp_exchange, oru
from tests.support.proc import RouterProcess, router_env, run_cli

ROOT = Path(__file__).resolve().parent.parent
HEADERS_LOG = "MLLP_TEST_HEADERS_LOG"


# --------------------------------------------------------------------------- certificates


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate from the same CA and
    one from another CA, as PEM files in folder. Returns name -> path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    out: dict[str, Path] = {}

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(key_name: str, key: Any, cert: x509.Certificate) -> None:
        out[key_name + ".key"] = folder / f"{key_name}.key"
        out[key_name + ".key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        out[key_name] = folder / f"{key_name}.pem"
        out[key_name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def ca(cn: str) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(cn: str, issuer: tuple[Any, x509.Certificate], server: bool) -> tuple[Any, x509.Certificate]:
        ikey, icert = issuer
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(icert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ikey.public_key()), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        return key, b.sign(ikey, hashes.SHA256())

    the_ca, other_ca = ca("Test Router CA"), ca("Some Other CA")
    write("ca", *the_ca)
    write("server", *leaf("localhost", the_ca, True))
    write("client", *leaf("lis-client", the_ca, False))
    write("stranger", *leaf("stranger", other_ca, False))
    return out


def client_context(certs: dict[str, Path], client: str | None = None, *,
                   max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    if client:
        ctx.load_cert_chain(str(certs[client]), str(certs[client + ".key"]))
    if max_version:
        ctx.maximum_version = max_version
    return ctx


# --------------------------------------------------------------------------- the router under test


def record_headers(env: Envelope) -> bool:
    """A python filter run by the router under test: log each envelope's headers, let it pass."""
    path = os.environ.get(HEADERS_LOG)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"control_id": env.control_id, "headers": env.headers}) + "\n")
    return True


ROUTES = """
routes:
  - name: lab
    source: {{type: mllp, port: {plain}, max_message_bytes: 4096, idle_timeout: 1.5s}}
    accept: [ORU^R01]
    filter: {{type: python, function: "tests.test_mllp:record_headers"}}
    destinations: [discard]
  - name: adt
    source: {{type: mllp, port: {plain}, max_message_bytes: 4096, idle_timeout: 1.5s}}
    accept: ["ADT^*"]
    destinations: [discard]
  - name: tls
    source:
      type: mllp
      port: {tls}
      tls: {{cert_file: certs/server.pem, key_file: certs/server.key}}
    accept: [ORU^R01]
    destinations: [discard]
  - name: mtls
    source:
      type: mllp
      port: {mtls}
      tls: {{cert_file: certs/server.pem, key_file: certs/server.key, ca_file: certs/ca.pem, min_version: "1.3"}}
    accept: [ORU^R01]
    destinations: [discard]
  - name: to-ehr
    source: {{type: mllp, port: {to}, receiving_application: EHR, receiving_facility: HOSP}}
    accept: [ORU^R01]
    destinations: [discard]
"""


class Router:
    def __init__(self, folder: Path, proc: RouterProcess, ports: dict[str, int], certs: dict[str, Path],
                 env: dict[str, str]) -> None:
        self.folder, self.proc, self.ports, self.certs, self.env = folder, proc, ports, certs, env

    def headers_of(self, control_id: str, timeout: float = 15) -> dict[str, str]:
        log = self.folder / "headers.jsonl"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists():
                for line in log.read_text().splitlines():
                    row = json.loads(line)
                    if row["control_id"] == control_id:
                        return dict(row["headers"])
            time.sleep(0.1)
        raise AssertionError(f"message {control_id} not processed")


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    folder = tmp_path_factory.mktemp("mllp")
    certs = make_certs(folder / "certs")
    ports = {k: free_port() for k in ("plain", "tls", "mtls", "to", "http")}
    (folder / "routes.yaml").write_text(ROUTES.format(**ports))
    env = router_env(PYTHONPATH=str(ROOT), **{HEADERS_LOG: str(folder / "headers.jsonl")})
    proc = RouterProcess(["run", "--http-port", str(ports["http"])], folder, env, http_port=ports["http"])
    try:
        proc.wait_healthy()
        yield Router(folder, proc, ports, certs, env)
    finally:
        proc.kill()


# --------------------------------------------------------------------------- a small MLLP client


class Client:
    """One MLLP connection, plain or TLS, that sends raw bytes and reads ACK frames."""

    def __init__(self, port: int, ctx: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(sock, server_hostname="localhost") if ctx else sock
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, message: bytes) -> None:
        self.send(b"\x0b" + message + b"\x1c\x0d")

    def ack(self) -> bytes:
        while b"\x1c\x0d" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed before an ACK (buffer {self.buf!r})")
            self.buf += chunk
        frame, _, self.buf = self.buf.partition(b"\x1c\x0d")
        assert frame.startswith(b"\x0b"), frame
        return frame[1:]

    def closed(self, timeout: float) -> bool:
        """True when the server closes the connection within timeout (without sending anything)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True
        except (TimeoutError, socket.timeout):
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def msa(ack: bytes) -> list[str]:
    """MSA fields (MSA-1 at index 1) in the ACK's own field separator."""
    fs = ack[3:4].decode()
    for seg in ack.decode().split("\r"):
        if seg.startswith("MSA"):
            return seg.split(fs)
    raise AssertionError(f"no MSA in {ack!r}")


def enhanced(cid: str, accept: str, mtype: str = "ORU^R01", application: str = "AL") -> bytes:
    return oru(cid, mtype=mtype).replace(b"|P|2.5\r", f"|P|2.5|||{accept}|{application}\r".encode())


# --------------------------------------------------------------------------- framing


def test_framing_edge_cases_on_one_connection(router: Router) -> None:
    log_before = len(router.proc.output())
    with Client(router.ports["plain"]) as c:
        c.send(b"\r\nnoise" + b"\x0b" + oru("F1") + b"\x1c\x0d")  # bytes before the frame are skipped
        assert msa(c.ack())[1:3] == ["AA", "F1"]
        # two frames in one write, then a frame dribbled in pieces with the end block split
        c.send(b"\x0b" + oru("F2") + b"\x1c\x0d\x0b" + oru("F3") + b"\x1c\x0d")
        raw = b"\x0b" + oru("F4") + b"\x1c\x0d"
        for i in range(0, len(raw) - 1, 7):
            c.send(raw[i:i + 7])
            time.sleep(0.005)
        c.send(raw[-1:])
        assert [msa(c.ack())[2] for _ in range(3)] == ["F2", "F3", "F4"]
        # a garbage frame and an empty frame are answered AR; the connection stays usable
        c.frame(b"hello, not HL7")
        bad = c.ack()
        assert msa(bad)[1] == "AR" and b"ERR|" in bad and b"not HL7" in bad
        c.frame(b"")
        assert msa(c.ack())[1] == "AR"
        c.frame(b"MSH|^~")  # an MSH too short to hold its encoding characters
        assert msa(c.ack())[1] == "AR"
        c.frame(oru("F5"))
        assert msa(c.ack())[1:3] == ["AA", "F5"]
        # a frame cut short by the next start block: AR for it, then the next one is taken
        c.send(b"\x0b" + oru("CUT")[:60] + b"\x0b" + oru("F6") + b"\x1c\x0d")
        cut = c.ack()
        assert msa(cut)[1] == "AR" and b"start block (0x0B) came before the end block" in cut
        assert msa(c.ack())[1:3] == ["AA", "F6"]
    out = router.proc.output()[log_before:]
    assert "bytes outside a frame skipped" in out and "reason=unterminated" in out and "Traceback" not in out


def test_a_frame_without_its_end_block_before_eof_is_refused(router: Router) -> None:
    with Client(router.ports["plain"]) as c:
        c.frame(oru("E1"))
        assert msa(c.ack())[1] == "AA"
        c.send(b"\x0b" + oru("E2"))  # no 0x1C 0x0D, then the sender stops writing
        c.sock.shutdown(socket.SHUT_WR)
        ack = c.ack()  # answered on the half-open connection, then closed
        assert msa(ack)[1:3] == ["AR", "E2"] and b"connection ended before the end block" in ack
        assert c.closed(5)


def test_too_large_is_refused_with_err_and_the_connection_kept(router: Router) -> None:
    with Client(router.ports["plain"]) as c:
        c.frame(oru("BIG", extra="X" * 20_000))  # limit 4096
        ack = c.ack()
        fields = msa(ack)
        assert fields[1:3] == ["AR", "BIG"] and "larger than the limit of 4096 bytes" in fields[3]
        info = read_ack(ack)
        assert info.errors[0].code == "207" and "4096" in info.errors[0].text
        assert ack.startswith(b"MSH|^~\\&|EHR|HOSP|LIS|LAB|")  # answered from the message's own header
        c.frame(oru("SMALL"))
        assert msa(c.ack())[1:3] == ["AA", "SMALL"]
        # too large and cut by the next start block: still one AR, and the next frame is taken
        c.send(b"\x0b" + oru("BIG2", extra="Y" * 9000) + b"\x0b" + oru("NEXT") + b"\x1c\x0d")
        assert msa(c.ack())[1:3] == ["AR", "BIG2"]
        assert msa(c.ack())[1:3] == ["AA", "NEXT"]


def test_idle_connections_are_closed(router: Router) -> None:
    with Client(router.ports["plain"]) as c:  # idle_timeout 1.5s
        c.frame(oru("I1"))
        assert msa(c.ack())[1] == "AA"
        t0 = time.monotonic()
        assert c.closed(10)
        assert 1.0 < time.monotonic() - t0 < 5
    with Client(router.ports["plain"]) as c:  # silent in the middle of a frame
        c.send(b"\x0b" + oru("I2")[:30])
        assert c.closed(10)
    with Client(router.ports["plain"]) as c:  # activity keeps it open longer than the timeout
        for i in range(4):
            c.frame(oru(f"K{i}"))
            assert msa(c.ack())[1] == "AA"
            time.sleep(0.6)
    assert "mllp idle timeout" in router.proc.output()


def test_many_concurrent_connections_get_their_acks_in_order(router: Router) -> None:
    n_conn, n_msg = 8, 50
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def one(k: int) -> None:
        try:
            with Client(router.ports["plain"], timeout=60) as c:
                ids = [f"C{k}-{i}" for i in range(n_msg)]
                # pipelined: all frames written at once, the ACKs must come back in the same order
                c.send(b"".join(b"\x0b" + oru(cid, sender=f"LIS{k}") + b"\x1c\x0d" for cid in ids))
                results[k] = [msa(c.ack())[2] for _ in ids]
                assert results[k] == ids
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n_conn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(results) == list(range(n_conn))


# --------------------------------------------------------------------------- the ACK contract


def test_ack_swaps_sender_and_receiver_and_carries_msa2(router: Router) -> None:
    [ack] = mllp_exchange(router.ports["plain"], [oru("S1")])
    msh = ack.split(b"\r")[0].split(b"|")
    assert msh[2:6] == [b"EHR", b"HOSP", b"LIS", b"LAB"]
    assert msh[8] == b"ACK^R01^ACK" and msh[10:12] == [b"P", b"2.5"] and msh[9] != b"S1"
    assert msa(ack)[1:3] == ["AA", "S1"] and b"ERR" not in ack


def test_unknown_message_type_is_refused_with_err(router: Router) -> None:
    [ack] = mllp_exchange(router.ports["plain"], [oru("U1", mtype="ZZZ^Z01")])
    info = read_ack(ack)
    assert (info.code, info.control_id) == ("AR", "U1") and "ZZZ^Z01" in info.text
    assert [(e.location, e.code, e.name) for e in info.errors] == [("MSH^1^9", "200", "Unsupported message type")]


def test_ack_uses_the_senders_encoding_characters_and_version(router: Router) -> None:
    # field #, component *, repetition @, escape !, subcomponent $; version 2.4
    msg = (b"MSH#*@!$#LIS#LAB#EHR#HOSP#20240101120000##ORU*R01#ENC1#P#2.4\r"
           b"PID#1##12345***HOSP*MR##TEST*PATIENT\rOBX#1#NM#GLU**L##5.4\r")
    bad = msg.replace(b"ORU*R01#ENC1", b"ZZZ*Z01#ENC2")
    with Client(router.ports["plain"]) as c:
        c.frame(msg)
        ack = c.ack()
        assert ack.startswith(b"MSH#*@!$#EHR#HOSP#LIS#LAB#")
        segs = ack.split(b"\r")
        assert segs[0].split(b"#")[8:12][0] == b"ACK*R01*ACK" and segs[0].split(b"#")[11] == b"2.4"
        assert segs[1] == b"MSA#AA#ENC1#"
        c.frame(bad)
        ack = c.ack()
        segs = ack.split(b"\r")
        assert segs[1].startswith(b"MSA#AR#ENC2#no route accepts message type ZZZ^Z01")
        # before 2.5 the error goes in ERR-1 (ELD): segment*sequence*field*code$text$table
        assert segs[2] == b"ERR#MSH*1*9*200$Unsupported message type$HL70357"
    v26 = msg.replace(b"#2.4\r", b"#2.6\r").replace(b"ORU*R01#ENC1", b"ZZZ*Z01#ENC3")
    [ack] = mllp_exchange(router.ports["plain"], [v26])
    err = [s for s in ack.split(b"\r") if s.startswith(b"ERR")][0].split(b"#")
    assert err[2] == b"MSH*1*9" and err[3] == b"200*Unsupported message type*HL70357" and err[4] == b"E"
    # text with the sender's delimiters is escaped with the sender's escape character
    assert build_ack(parse_header(msg.decode()), "AE", "a#b*c").split(b"\r")[1] == b"MSA#AE#ENC1#a!F!b!S!c"


def test_resent_message_is_acknowledged_again_and_processed_once(router: Router) -> None:
    first = oru("RESEND1", sender="LISR")
    acks = mllp_exchange(router.ports["plain"], [first, first])
    assert [ack_code(a) for a in acks] == ["AA", "AA"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        res = run_cli(["messages", "--control-id", "RESEND1", "--json"], router.folder, router.env)
        assert res.returncode == 0, res.stderr
        rows = [json.loads(line) for line in res.stdout.splitlines()]
        if sorted(r["status"] for r in rows) == ["duplicate", "processed"]:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"expected one processed and one duplicate, got {rows}")


@pytest.mark.parametrize(("accept", "good", "bad"), [
    ("AL", "CA", "CR"),
    ("ER", None, "CR"),
    ("NE", None, None),
    ("SU", "CA", None),
])
def test_enhanced_mode_commit_acks(router: Router, accept: str, good: str | None, bad: str | None) -> None:
    """MSH-15 decides whether a commit ACK is sent; an original-mode message after each one shows
    what (if anything) came back for it, and that the connection is still usable."""
    def exchange(c: Client, message: bytes, sentinel: str) -> list[list[str]]:
        c.frame(message)
        c.frame(oru(sentinel))
        got = []
        while True:
            fields = msa(c.ack())
            if fields[2] == sentinel:
                assert fields[1] == "AA"
                return got
            got.append(fields)

    with Client(router.ports["plain"]) as c:
        ok = exchange(c, enhanced(f"EN-{accept}-1", accept), f"EN-{accept}-S1")
        assert [f[1:3] for f in ok] == ([[good, f"EN-{accept}-1"]] if good else [])
        refused = exchange(c, enhanced(f"EN-{accept}-2", accept, mtype="ZZZ^Z01"), f"EN-{accept}-S2")
        assert [f[1:3] for f in refused] == ([[bad, f"EN-{accept}-2"]] if bad else [])
    # MSH-15/16 are kept in the envelope for the application acknowledgment to come
    headers = router.headers_of(f"EN-{accept}-1")
    assert headers["accept_ack_type"] == accept and headers["application_ack_type"] == "AL"


def test_receiver_check(router: Router) -> None:
    port = router.ports["to"]
    ok = oru("R1")  # MSH-5 EHR, MSH-6 HOSP
    hd = ok.replace(b"|EHR|HOSP|", b"|EHR^1.2.643.5.1^ISO|HOSP|").replace(b"|R1|", b"|R2|")
    app = ok.replace(b"|EHR|HOSP|", b"|PACS|HOSP|").replace(b"|R1|", b"|R3|")
    fac = ok.replace(b"|EHR|HOSP|", b"|EHR|CLINIC2|").replace(b"|R1|", b"|R4|")
    acks = mllp_exchange(port, [ok, hd, app, fac])
    assert [ack_code(a) for a in acks] == ["AA", "AA", "AR", "AR"]
    app_ack, fac_ack = read_ack(acks[2]), read_ack(acks[3])
    assert app_ack.control_id == "R3" and "'PACS'" in app_ack.text
    assert [(e.location, e.code) for e in app_ack.errors] == [("MSH^1^5", "103")]
    assert [(e.location, e.code) for e in fac_ack.errors] == [("MSH^1^6", "103")]
    # the ACK answers from the receiver the message named
    assert acks[2].startswith(b"MSH|^~\\&|PACS|HOSP|LIS|LAB|")


# --------------------------------------------------------------------------- TLS


def test_tls(router: Router) -> None:
    with Client(router.ports["tls"], client_context(router.certs)) as c:
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
        c.frame(oru("T1"))
        assert msa(c.ack())[1:3] == ["AA", "T1"]
    with Client(router.ports["tls"], client_context(router.certs, max_version=ssl.TLSVersion.TLSv1_2)) as c:
        c.frame(oru("T2"))
        assert msa(c.ack())[1:3] == ["AA", "T2"]
    # plain MLLP to the TLS port: no ACK, the connection is dropped
    with Client(router.ports["tls"]) as c:
        c.frame(oru("T3"))
        assert c.closed(10)
    router.proc.wait_log("mllp tls handshake failed")


def test_mutual_tls(router: Router) -> None:
    port = router.ports["mtls"]
    with Client(port, client_context(router.certs, "client")) as c:
        assert c.sock.version() == "TLSv1.3"  # type: ignore[union-attr]
        c.frame(oru("M1"))
        assert msa(c.ack())[1:3] == ["AA", "M1"]
    for client in (None, "stranger"):  # no certificate; a certificate from another CA
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with Client(port, client_context(router.certs, client)) as c:
                # TLS 1.3: the client learns of the refusal on its first read
                c.frame(oru("M2"))
                c.ack()
    with pytest.raises(ssl.SSLError):  # min_version 1.3
        Client(port, client_context(router.certs, "client", max_version=ssl.TLSVersion.TLSv1_2))
    router.proc.wait_log("mllp tls handshake failed")


def test_tls_options() -> None:
    from router.sources.mllp import MllpOptions

    tls = {"cert_file": "s.pem", "key_file": "s.key"}
    assert MllpOptions.model_validate({"tls": {**tls, "min_version": 1.3}}).tls.min_version == "1.3"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        MllpOptions.model_validate({"tls": {**tls, "min_version": "1.1"}})
    with pytest.raises(ValueError):
        MllpOptions.model_validate({"tls": {"cert_file": "s.pem"}})


def test_tls_settings_are_part_of_the_listener(tmp_path: Path) -> None:
    """`router check`: routes on one port must agree on TLS and the receiver check."""
    (tmp_path / "routes.yaml").write_text(
        "routes:\n"
        "  - {name: a, source: {type: mllp, port: 2700, tls: {cert_file: a.pem, key_file: a.key}}, accept: [ORU^R01],"
        " destinations: [discard]}\n"
        "  - {name: b, source: {type: mllp, port: 2700}, accept: [ADT^A01], destinations: [discard]}\n"
        "  - {name: c, source: {type: mllp, port: 2701, receiving_facility: X}, accept: [ORU^R01],"
        " destinations: [discard]}\n"
        "  - {name: d, source: {type: mllp, port: 2701}, accept: [ADT^A01], destinations: [discard]}\n"
        "  - {name: e, source: {type: mllp, port: 2702, tls: {cert_file: a.pem, key_file: a.key}}, accept: [ORU^R01],"
        " destinations: [discard]}\n"
        "  - {name: f, source: {type: mllp, port: 2702, tls: {cert_file: a.pem, key_file: a.key}}, accept: [ADT^A01],"
        " destinations: [discard]}\n")
    res = run_cli(["check"], tmp_path, router_env())
    assert res.returncode == 1
    assert "tcp port 2700 is used by both route 'a' (mllp source) and route 'b'" in res.stderr
    assert "tcp port 2701 is used by both route 'c' (mllp source) and route 'd'" in res.stderr
    assert "2702" not in res.stderr and "2 problems" in res.stderr


def test_a_missing_certificate_stops_run_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(
        "routes:\n  - name: a\n    source: {type: mllp, port: " + str(free_port()) + ", tls: {cert_file: nope.pem, "
        "key_file: nope.key}}\n    destinations: [discard]\n")
    res = run_cli(["run", "--http-port", str(free_port())], tmp_path, router_env(), timeout=60)
    assert res.returncode != 0
    assert "cannot load cert_file" in res.stderr and str(tmp_path / "nope.pem") in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


@pytest.mark.parametrize("text", ["a|b^c~d&e", "\\F\\ literal", "back\\slash", "\\E\\F", "\\", "plain"])
def test_ack_text_round_trips_through_escaping(text: str) -> None:
    for head in ("MSH|^~\\&|A|B|C|D|1||ORU^R01|X|P|2.5\r", "MSH#*@!$#A#B#C#D#1##ORU*R01#X#P#2.3\r"):
        info = read_ack(build_ack(parse_header(head), "AE", text, error="application-error", location="PID^1^3"))
        assert (info.code, info.control_id, info.text) == ("AE", "X", text)
        assert info.errors[0].location == "PID^1^3" and info.errors[0].code == "207"


def test_backlog_bound_holds_acks_until_workers_catch_up(tmp_path: Path) -> None:
    from router.transport.base import route_queues
    from router.transport.embedded import EmbeddedTransport

    port, http = free_port(), free_port()
    (tmp_path / "routes.yaml").write_text(f"""routes:
  - name: lab
    source: {{type: mllp, port: {port}, max_backlog: 20}}
    accept: [ORU^R01]
    destinations: [discard]
""")
    proc = RouterProcess(["run", "--no-workers", "--http-port", str(http)], tmp_path, router_env(), http_port=http)
    try:
        proc.wait_healthy()
        with Client(port) as c:
            for i in range(20):  # up to the bound: accepted at once
                c.frame(oru(f"BP{i}"))
                assert ack_code(c.ack()) == "AA"
            proc.wait_log("intake paused", timeout=10)
            c.frame(oru("BP-over"))
            c.sock.settimeout(1.5)
            with pytest.raises(TimeoutError):  # not read while the backlog is at its bound
                c.ack()
            transport = EmbeddedTransport(str(tmp_path / "var" / "queue.db"))
            consumer = transport.consumer([route_queues("router", "lab")], prefetch=100)
            taken = consumer.fetch(100, 5)
            assert len(taken) == 20
            consumer.ack(taken)  # a worker caught up
            c.sock.settimeout(10)
            ack = c.ack()
            assert ack_code(ack) == "AA" and b"BP-over" in ack
            consumer.close()
            transport.close()
    finally:
        proc.kill()
