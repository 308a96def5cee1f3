"""A small progress bar (no dependency): redrawn in place on a terminal; elsewhere (a log, a
pipe) one line per finished item, so that logs stay readable."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """ProgressBar(total, stream=sys.stderr): ``update(done, text)`` shows done/total units of
    work on a terminal; ``item_done(text)`` writes a line off a terminal (where the bar is not
    drawn); ``close()`` erases the bar."""

    width = 28

    def __init__(self, total: int, stream=None):
        self.total = max(1, total)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self._shown = False

    def update(self, done: int, text: str = "") -> None:
        if not self.tty:
            return
        fraction = min(1.0, done / self.total)
        filled = round(self.width * fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.monotonic() - self.start
        self.stream.write(f"\r\033[K[{bar}] {100 * fraction:3.0f}% {elapsed:5.1f}s  {text}")
        self.stream.flush()
        self._shown = True

    def item_done(self, text: str) -> None:
        if not self.tty:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False
