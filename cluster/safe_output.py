"""Output that never stops training: a TensorBoard writer whose failures (a full disk, a vanished
log directory, an I/O error) are said once on the console and retried later, instead of raising
in the middle of the training loop. Losing some TensorBoard points is the cost; the run and its
checkpoints go on (docs/reliability.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

REOPEN_AFTER_S = 30.0
"""After a failed write the writer is dropped; the first call this long after opens a new one
(a new event file in the same directory), so logging resumes once space is freed."""


class GuardedWriter:
    """Forwards every call to a SummaryWriter made by `factory`; an OSError drops the writer (the
    points of the meantime are lost) and is said once through `say`."""

    def __init__(self, factory: Callable[[], Any], say: Callable[[str], None]):
        _quiet_writer_threads()
        self._factory, self._say = factory, say
        self._writer: Any = None
        self._failed_at: float | None = None
        self.lost = False
        self._open()

    def _open(self) -> Any:
        if self._writer is None and (
            self._failed_at is None or time.monotonic() - self._failed_at >= REOPEN_AFTER_S
        ):
            try:
                self._writer = self._factory()
                if self._failed_at is not None:
                    self._say("[rogueray] TensorBoard logging resumed")
                self._failed_at = None
            except OSError as exc:
                self._fail(exc)
        return self._writer

    def _fail(self, exc: OSError) -> None:
        if self._failed_at is None:
            text = (
                f"[rogueray] TensorBoard logging paused ({exc.strerror or exc}); training and "
                f"checkpoints go on, logging is retried every {REOPEN_AFTER_S:g} s"
            )
            try:
                self._say(text)
            except Exception:  # noqa: BLE001 - e.g. the console is not built yet
                print(text, flush=True)
        self.lost = True
        self._failed_at = time.monotonic()
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - it already failed; drop it
                pass

    def __getattr__(self, name: str) -> Any:
        writer = self._open()
        if writer is None:
            return _ignore
        attr = getattr(writer, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except OSError as exc:
                self._fail(exc)
                return None

        return call


def _ignore(*args, **kwargs) -> None:
    return None


def _quiet_writer_threads() -> None:
    """TensorBoard's background writer thread dies with a traceback on a full disk; the same
    error reaches GuardedWriter on the next call and is said there in one line, so the thread's
    own traceback is dropped. Every other thread's exception is printed as before."""
    previous = threading.excepthook
    if getattr(previous, "_rogueray", False):
        return

    def hook(args) -> None:
        if (
            isinstance(args.exc_value, OSError)
            and type(args.thread).__name__ == "_AsyncWriterThread"
        ):
            return
        previous(args)

    hook._rogueray = True  # type: ignore[attr-defined]
    threading.excepthook = hook
