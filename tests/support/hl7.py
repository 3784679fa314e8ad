"""Small helpers to build HL7 messages and talk MLLP in tests."""
from __future__ import annotations

import socket


def oru(control_id: str, *, sender: str = "LIS", extra: str = "", mtype: str = "ORU^R01",
        order: str | None = None, value: str = "5.4") -> bytes:
    return (f"MSH|^~\\&|{sender}|LAB|EHR|HOSP|20240101120000||{mtype}|{control_id}|P|2.5\r"
            f"PID|1||12345^^^HOSP^MR||TEST^PATIENT\rOBR|1|{order or 'ORD' + control_id}\r"
            f"OBX|1|NM|GLU^Glucose^L||{value}|mmol/L|||||F{extra}\r").encode()


def mllp_exchange(port: int, messages: list[bytes], timeout: float = 10.0) -> list[bytes]:
    acks = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        for m in messages:
            s.sendall(b"\x0b" + m + b"\x1c\x0d")
            buf = b""
            while not buf.endswith(b"\x1c\x0d"):
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed before the ACK")
                buf += chunk
            acks.append(buf[1:-2])
    return acks


def ack_code(ack: bytes) -> str:
    for seg in ack.split(b"\r"):
        if seg.startswith(b"MSA"):
            return seg.split(b"|")[1].decode()
    raise AssertionError(f"no MSA in {ack!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
