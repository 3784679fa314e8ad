"""python-hl7's asyncio MLLP server (hl7.mllp.start_hl7_server) answering every message with
AA (hl7.Message.create_ack), storing nothing: the python-hl7 peer of `router bench`.

    python -m router.bench.hl7_peer PORT
"""
from __future__ import annotations

import asyncio
import signal
import sys


async def main(port: int) -> None:
    import hl7.mllp

    async def serve(reader: "hl7.mllp.HL7StreamReader", writer: "hl7.mllp.HL7StreamWriter") -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                writer.writemessage(message.create_ack())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await hl7.mllp.start_hl7_server(serve, host="127.0.0.1", port=port, encoding="utf-8", backlog=1024)
    print(f"listening {port}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
