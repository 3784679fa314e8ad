"""File source: polls a folder; each file is one message. A file moves to done/ only after durable
enqueue, to error/ (with a .reason file) when refused; on a transport failure it stays for the next poll."""
from __future__ import annotations

import asyncio
from pathlib import Path

from ..errors import InputError, TransportError
from ..formats import hl7v2
from ..logging import get
from .base import SourceContext
from .file import FileOptions

log = get("router.file")


class FilePoller:
    def __init__(self, options: FileOptions, context: SourceContext) -> None:
        folder = Path(options.path)
        self.folder = folder if folder.is_absolute() else Path(context.base_dir) / folder
        self.options, self.context = options, context
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self) -> None:
        for sub in ("", self.options.done_dir, self.options.error_dir):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.stopping = True
        if self.task is not None:
            await asyncio.wait([self.task], timeout=30)

    async def _run(self) -> None:
        while not self.stopping:
            for path in sorted(self.folder.glob(self.options.pattern)):
                if self.stopping:
                    return
                if path.is_file() and not path.name.startswith("."):
                    await self._one(path)
            await asyncio.sleep(self.options.poll_interval)

    async def _one(self, path: Path) -> None:
        """One file: a message, or an HL7 batch (FHS/BHS or several MSH) split into its messages.
        All of a file's messages are enqueued or none is refused: a refused one sends the whole
        file to error/; a transport failure leaves it for the next poll (resends are deduplicated)."""
        intake = self.context.intake
        try:
            raw = path.read_bytes()
            messages = hl7v2.split_messages(raw)
            accepted = [intake.prepare(m, source=f"file:{path.name}#{n + 1}" if len(messages) > 1
                                       else f"file:{path.name}", content_type=None)
                        for n, m in enumerate(messages)]
        except InputError as exc:
            path.replace(self.folder / self.options.error_dir / path.name)
            (self.folder / self.options.error_dir / f"{path.name}.reason").write_text(f"{type(exc).__name__}: {exc}\n")
            log.warning("file refused", file=path.name, error=type(exc).__name__)
            return
        try:
            await asyncio.gather(*(intake.enqueue(a) for a in accepted))
        except TransportError as exc:
            log.warning("file not enqueued; will retry", file=path.name, error=str(exc)[:200])
            return
        path.replace(self.folder / self.options.done_dir / path.name)
