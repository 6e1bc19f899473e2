"""Argument checks shared by the DP modules, and the lazy Opacus import.

Every public entry point validates its privacy parameters before it touches data or
starts training, so a typo (``delta=1e5``) fails at once with a message that names
the parameter, instead of silently producing a meaningless guarantee.
"""

from __future__ import annotations

import math
import numbers
from types import ModuleType
from typing import Any

OPACUS_HINT = "differential privacy needs Opacus: pip install syft-mpc[dp]"


def require_opacus() -> ModuleType:
    """Imports Opacus on first use, so ``import syft_mpc.dp`` works without it."""
    try:
        import opacus  # type: ignore[import-untyped]
    except ImportError as e:  # pragma: no cover - exercised in a subprocess test
        raise ImportError(OPACUS_HINT) from e
    return opacus  # type: ignore[no-any-return]


def _real(name: str, value: Any) -> float:
    # bool is an int subclass; True as a privacy parameter is always a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} must be a number, got nan")
    return v


def check_epsilon(epsilon: Any, name: str = "epsilon") -> float:
    v = _real(name, epsilon)
    if not (0.0 < v < math.inf):
        raise ValueError(f"{name} must be a finite number > 0, got {epsilon!r}")
    return v


def check_delta(delta: Any, name: str = "delta") -> float:
    v = _real(name, delta)
    if not (0.0 < v < 1.0):
        raise ValueError(
            f"{name} must lie in the open interval (0, 1) (typically well below 1/n for n records), got {delta!r}"
        )
    return v


def check_sample_rate(rate: Any, name: str = "sample_rate") -> float:
    v = _real(name, rate)
    if not (0.0 < v <= 1.0):
        raise ValueError(f"{name} must lie in (0, 1] (the probability that a record takes part in a step), got {rate!r}")
    return v


def check_positive(value: Any, name: str) -> float:
    v = _real(name, value)
    if not (0.0 < v < math.inf):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


ACCOUNTANTS = ("rdp", "prv")


def check_accountant_name(name: Any) -> str:
    # Opacus's "gdp" accountant is only asymptotically valid (many steps); it is not offered.
    if name not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {name!r}")
    return str(name)


def make_accountant(name: str = "rdp") -> Any:
    """A fresh Opacus privacy accountant: ``"rdp"`` (Mironov 2017) or ``"prv"``.

    Pass the same accountant to successive :func:`~syft_mpc.dp.dp_sgd_fit` calls to
    account a worker's training over several federated rounds.
    """
    check_accountant_name(name)
    require_opacus()
    from opacus.accountants import create_accountant  # type: ignore[import-untyped]

    return create_accountant(mechanism=name)
