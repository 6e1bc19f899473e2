"""Progress bars for federated training that also behave in a log file.

:func:`progress` returns a tqdm bar. In a terminal or a Jupyter kernel it is tqdm's usual
bar (redrawn in place with ``\\r``, which both render). Anywhere else (stderr redirected to a
file, CI logs) redrawing in place would leave one ``\\r``-joined fragment per update, so
the bar writes a whole line instead, at most once every ``LOG_INTERVAL_S`` seconds and at
the end. With ``delay`` the bar appears only once the loop has run that long, so short
loops print nothing. In a log the last line (the final count) stays.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, TextIO

__all__ = ["LOG_INTERVAL_S", "progress", "is_interactive"]

LOG_INTERVAL_S = 30.0
"""Seconds between two progress lines when stderr is not a terminal."""


def is_interactive(stream: Any = None) -> bool:
    """True when ``stream`` (default stderr) is a terminal or a Jupyter kernel's output."""
    stream = sys.stderr if stream is None else stream
    if type(stream).__module__.startswith("ipykernel"):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Lines:
    """A file for tqdm that turns each in-place redraw into one line (for logs)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def write(self, s: str) -> int:
        text = s.replace("\r", "").strip()
        if text and text != self.last:
            self.stream.write(text + "\n")
            self.last = text
        return len(s)

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: "Iterable[Any] | None" = None, *, enabled: bool = True, delay: float = 0.0, **kwargs: Any) -> Any:
    """A tqdm bar over ``iterable`` (``kwargs`` go to tqdm: ``total``, ``desc``, ``unit``, ...)."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    stream = kwargs.pop("file", None) or sys.stderr
    if not is_interactive(stream):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S)
        kwargs.setdefault("ncols", 100)
        kwargs["leave"] = True  # a log keeps the final count (there is nothing to redraw over)
        stream = _Lines(stream)
    return tqdm(iterable, file=stream, disable=not enabled, delay=delay, dynamic_ncols=False, **kwargs)
