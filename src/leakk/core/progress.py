"""Progress bars that also reach the console under Snakemake.

A workflow job sends its stderr to ``results/logs/<job>.log``, so a tqdm bar (stderr) is
seen only there. :class:`tqdm` here is tqdm's bar plus, when stderr is redirected away from
stdout (as in every rule's ``2> {log}``), a throttled one-line status on stdout, which
Snakemake shows on the console: a line every :data:`CONSOLE_EVERY` seconds and a final line
per bar. Run by hand in a terminal, only the usual bar is drawn.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm as _tqdm

#: seconds between two console lines of one bar
CONSOLE_EVERY = 10.0


def console_stream() -> TextIO | None:
    """stdout, if it is a different file than a non-terminal stderr (a job whose stderr
    goes to a log); else None (the bar itself is visible, or there is no console)."""
    try:
        if sys.stderr.isatty():
            return None
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # captured streams (pytest), closed fds
        return None
    return None if (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino) else sys.stdout


class tqdm(_tqdm):  # noqa: N801 - a drop-in for tqdm.auto.tqdm
    """tqdm that also writes throttled status lines to the console (see module doc)."""

    def __init__(self, *args: Any, cap: bool = False, **kwargs: Any) -> None:
        """``cap``: ``total`` is an upper bound (a run that may stop earlier, e.g. unlearning
        with a stop criterion), so the console line counts towards a cap, not a finish."""
        self._cap = cap
        super().__init__(*args, **kwargs)
        self._console = None if self.disable else console_stream()
        self._start = self._last = time.monotonic()

    def _tick(self) -> None:
        if self._console is None:
            return
        now = time.monotonic()
        if now - self._last >= CONSOLE_EVERY:
            self._last = now
            self._line(now, final=False)

    def _line(self, now: float, final: bool) -> None:
        desc = self.desc or "progress"
        unit = self.unit or "it"
        elapsed = now - self._start
        total, count = self.total, self.n
        rate = count / elapsed if elapsed > 0 else 0.0
        if final:
            text = f"{desc}: done, {count:g} {unit}s in {elapsed:.0f} s"
        elif total and self._cap:
            eta = f", at most ~{(total - count) / rate:.0f} s left" if rate > 0 else ""
            text = f"{desc}: {count:g} {unit}s of at most {total:g} (it may stop earlier), {elapsed:.0f} s{eta}"
        elif total:
            eta = f", ~{(total - count) / rate:.0f} s left" if rate > 0 else ""
            text = f"{desc}: {count:g}/{total:g} {unit}s ({100 * count / total:.0f}%), {elapsed:.0f} s{eta}"
        else:
            text = f"{desc}: {count:g} {unit}s, {elapsed:.0f} s"
        if not final and self.postfix:
            text += f" [{self.postfix}]"
        try:
            print(text, file=self._console, flush=True)
        except (OSError, ValueError):  # the console went away: keep working
            self._console = None

    def update(self, n: float = 1) -> bool | None:
        # iterating calls update() every ``mininterval`` seconds, so both uses tick here
        out = super().update(n)
        self._tick()
        return out

    def close(self) -> None:
        if getattr(self, "_console", None) is not None:
            self._line(time.monotonic(), final=True)
            self._console = None
        super().close()
