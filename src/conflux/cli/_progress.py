"""Progress on stderr for commands that may take a while (import, export).

A bar appears only when stderr is a terminal, not with ``--quiet``, and only once the work has
taken more than a moment (tqdm's ``delay``), so short runs and pipes stay clean.
"""

from __future__ import annotations

import os
import sys

#: seconds before a bar shows ($CONFLUX_PROGRESS_DELAY)
_DELAY = float(os.environ.get("CONFLUX_PROGRESS_DELAY", "0.5"))


class Progress:
    def __init__(self, *, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = not quiet and self.stream.isatty()
        self._bar = None

    def start(self, what: str, total: int | None, unit: str = "files") -> None:
        """A new stage: a bar over ``total`` units, or (``None``) a count and the time spent."""
        self.close()
        if not self.enabled:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=what, unit=f" {unit}", file=self.stream,
                         delay=_DELAY, leave=False, dynamic_ncols=True,
                         bar_format=None if total else "{desc}: {n_fmt}{unit} ({elapsed})"
                         if unit else "{desc} ({elapsed})")

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
