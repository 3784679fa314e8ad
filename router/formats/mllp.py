"""MLLP framing (HL7 v2.5.1 Appendix C): 0x0B message 0x1C 0x0D."""
from __future__ import annotations

START, END = b"\x0b", b"\x1c\x0d"


def frame(body: bytes) -> bytes:
    return START + body + END


def take_frame(buf: bytearray, max_bytes: int) -> bytes | None:
    """The first whole frame in `buf`, removed from it with what came before its start byte; None
    while it is incomplete (bytes before any start byte are dropped). ValueError when more than
    `max_bytes` wait for an end. For clients reading answers; the listener has its own framing
    (router/sources/mllp_server.py), which also reports frames cut short."""
    i = buf.find(START)
    if i == -1:
        buf.clear()
        return None
    j = buf.find(END, i)
    if j == -1:
        if len(buf) > max_bytes:
            raise ValueError(f"answer larger than {max_bytes} bytes")
        return None
    data = bytes(buf[i + 1:j])
    del buf[:j + 2]
    return data
