"""Per-round training history of :class:`~syft_mpc.federated.FedAvg`: records, arrays, PNG plots.

A missing value is NaN (no test set, a loss that is not released under DP, no DP), so every
column is a float array that ``np.savez`` stores without pickling.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator, Mapping

import numpy as np

__all__ = ["History", "RoundRecord", "plot_histories"]

NAN = float("nan")


@dataclass
class RoundRecord:
    """One round: who took part, what was measured, what privacy was spent so far."""

    round: int
    participants: int
    train_loss: float = NAN
    """Mean local training loss, weighted by sample counts (NaN under DP: it is not released)."""
    test_loss: float = NAN
    test_accuracy: float = NAN
    epsilon: float = NAN
    """Central (client-level) ε spent so far by DP federated averaging."""
    local_epsilon: float = NAN
    """Largest example-level ε spent so far by a worker's DP-SGD."""
    seconds: float = NAN


_COLUMNS = tuple(f.name for f in fields(RoundRecord))


class History:
    """The records of the rounds run so far (``history[i]``, ``len(history)``, ``history.column("test_accuracy")``)."""

    def __init__(self, records: "list[RoundRecord] | None" = None) -> None:
        self.records: list[RoundRecord] = list(records or [])

    def append(self, record: RoundRecord) -> None:
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[RoundRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> RoundRecord:
        return self.records[i]

    def __repr__(self) -> str:
        if not self.records:
            return "<History: no rounds>"
        last = self.records[-1]
        return f"<History: {len(self)} rounds, last {asdict(last)}>"

    def column(self, name: str) -> np.ndarray:
        """One field over the rounds, as a float64 array (``round`` and ``participants`` too)."""
        if name not in _COLUMNS:
            raise KeyError(f"unknown column {name!r}; one of {_COLUMNS}")
        return np.array([float(getattr(r, name)) for r in self.records], dtype=np.float64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every column as an array (what checkpoints store)."""
        return {name: self.column(name) for name in _COLUMNS}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "History":
        """Inverse of :meth:`to_arrays` (missing columns become NaN)."""
        n = len(arrays["round"]) if "round" in arrays else 0
        records = []
        for i in range(n):
            kw: dict[str, Any] = {}
            for name in _COLUMNS:
                col = arrays.get(name)
                v = float(col[i]) if col is not None else NAN
                kw[name] = int(v) if name in ("round", "participants") else v
            records.append(RoundRecord(**kw))
        return cls(records)

    def plot(self, path: str, title: str = "Federated averaging") -> str:
        """Saves test accuracy, losses and ε per round as a PNG at ``path``; returns ``path``."""
        return plot_histories({"": self}, path, title=title)


def plot_histories(histories: Mapping[str, History], path: str, title: str = "Federated averaging") -> str:
    """One PNG comparing several runs (label -> history): test accuracy, losses, and ε when any run spent some.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is a dev dependency
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from e

    def has(col: str) -> bool:
        return any(np.isfinite(h.column(col)).any() for h in histories.values())

    panels = [("test_accuracy", "test accuracy")] if has("test_accuracy") else []
    panels += [("loss", "loss")]
    if has("epsilon") or has("local_epsilon"):
        panels.append(("epsilon", "ε spent"))
    fig = Figure(figsize=(4.4 * len(panels), 3.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (col, ylabel) in zip(axes, panels):
        for i, (label, h) in enumerate(histories.items()):
            x, color = h.column("round"), f"C{i % 10}"  # one color per run in every panel
            if col == "loss":
                for c, style in (("train_loss", "--"), ("test_loss", "-")):
                    y = h.column(c)
                    if np.isfinite(y).any():
                        ax.plot(x, y, style, color=color, label=f"{label} ({c.split('_')[0]})".strip())
            elif col == "epsilon":
                for c, style in (("epsilon", "-"), ("local_epsilon", ":")):
                    y = h.column(c)
                    if np.isfinite(y).any():
                        kind = "client-level" if c == "epsilon" else "example-level"
                        ax.plot(x, y, style, color=color, label=f"{label} ({kind})".strip())
            else:
                ax.plot(x, h.column(col), color=color, label=label or None)
        if col in ("loss", "epsilon"):
            ax.set_yscale("log")  # DP runs span orders of magnitude
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if any(line.get_label() and not str(line.get_label()).startswith("_") for line in ax.get_lines()):
            ax.legend(fontsize=6.5)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def fmt(v: float, digits: int = 4) -> str:
    """A number for tables and progress bars ("-" for NaN)."""
    return "-" if math.isnan(v) else f"{v:.{digits}g}"
