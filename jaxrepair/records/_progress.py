"""Progress of long work in one form: a single updating bar on a terminal, plain lines (at most
one every few seconds, and the last) when stderr is not a terminal or ``JAXREPAIR_PROGRESS=plain``
(the CLI's ``--json`` sets it); ``JAXREPAIR_PROGRESS=off`` silences it. Always on stderr.

The rate, and so the time left, is measured from the first update on, not from the start: the first
step of a compiled loop pays for compiling it, and counting it made early estimates several times
too long.

>>> p = Progress("search", total=100)
>>> for gen in range(100):
...     p.update(gen + 1, f"best {0.5:.3f}")       # doctest: +SKIP
>>> p.close()
"""

from __future__ import annotations

import os
import sys
import time

#: Seconds between plain lines.
EVERY_S = 3.0
#: Seconds between redraws of the bar.
REDRAW_S = 0.2
_BAR = 24


def style() -> str:
    """``"bar"``, ``"plain"`` or ``"off"``: ``$JAXREPAIR_PROGRESS``, else a bar on a terminal."""
    want = os.environ.get("JAXREPAIR_PROGRESS", "").strip().lower()
    if want in ("bar", "plain", "off"):
        return want
    return "bar" if getattr(sys.stderr, "isatty", lambda: False)() else "plain"


def _clock(s: float) -> str:
    s = max(0.0, s)
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s"


class Progress:
    """``label`` names the work, ``total`` the number of steps (None: open-ended). ``update(done,
    text)`` reports; ``close(text)`` ends it with a final line."""

    def __init__(self, label: str, total: int | None = None, *, enabled: bool = True, every: float = EVERY_S):
        self.label, self.total, self.every = label, total, every
        self.mode = style() if enabled else "off"
        self.t0 = time.perf_counter()
        self.first: tuple[float, float] | None = None  # (time, done) of the first update
        self.last_shown = -float("inf")
        self.done, self.text, self.closed = 0, "", False

    def _eta(self, now: float) -> str:
        if self.total is None or self.first is None or self.done <= self.first[1]:
            return ""
        rate = (now - self.first[0]) / (self.done - self.first[1])
        return f", about {_clock(rate * (self.total - self.done))} left"

    def _line(self, now: float, eta: bool = True) -> str:
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        text = f" {self.text}" if self.text else ""
        return f"[{self.label}] {count}{text} ({_clock(now - self.t0)}{self._eta(now) if eta else ''})"

    def update(self, done: int | None = None, text: str = "", *, force: bool = False) -> None:
        if self.mode == "off" or self.closed:
            return
        now = time.perf_counter()
        self.done = self.done + 1 if done is None else int(done)
        self.text = text
        if self.first is None:
            self.first = (now, self.done)
        final = self.total is not None and self.done >= self.total
        if self.mode == "bar":
            if force or final or now - self.last_shown >= REDRAW_S:
                frac = min(1.0, self.done / self.total) if self.total else 0.0
                bar = ("#" * int(frac * _BAR)).ljust(_BAR, ".") if self.total else ""
                sys.stderr.write("\r\033[K" + (f"{bar} " if bar else "") + self._line(now))
                sys.stderr.flush()
                self.last_shown = now
        elif force or final or now - self.last_shown >= self.every:
            print(self._line(now), file=sys.stderr, flush=True)
            self.last_shown = now

    def note(self, text: str) -> None:
        """A line of its own (a result worth keeping on screen), in the same form."""
        if self.mode == "off":
            return
        if self.mode == "bar":
            sys.stderr.write("\r\033[K")
            self.last_shown = -float("inf")  # the bar is redrawn under the note at the next update
        print(f"[{self.label}] {text}", file=sys.stderr, flush=True)

    def close(self, text: str = "") -> None:
        """The final line: always shown (unless off), whatever the throttle skipped."""
        if self.mode == "off" or self.closed:
            return
        if text:
            self.text = text
        line = self._line(time.perf_counter(), eta=False) + (" done" if self.total and self.done >= self.total else "")
        if self.mode == "bar":
            sys.stderr.write("\r\033[K" + line + "\n")
            sys.stderr.flush()
        else:
            print(line, file=sys.stderr, flush=True)
        self.closed = True
