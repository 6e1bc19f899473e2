"""Old module paths that stay importable for one more release.

Before the package was split into subpackages by role, every module sat at the top
(``syft_mpc.workers``, ``syft_mpc.shared``, ...). Each old path is now a two-line module
that calls :func:`moved`: importing it warns (``DeprecationWarning``) and gives the module
at its new path, the very same module object.
"""

from __future__ import annotations

import importlib
import sys
import warnings

__all__ = ["moved"]


def moved(old: str, new: str, *, assemble: bool = True) -> None:
    """Makes module path ``old`` an alias of module ``new``. With ``assemble`` the composition
    root (:mod:`syft_mpc.hook`) is imported first, as ``import syft_mpc.workers`` once did."""
    warnings.warn(
        f"{old} moved to {new}; import it from there (the old path will be removed in the next release)",
        DeprecationWarning,
        stacklevel=3,
    )
    if assemble:
        importlib.import_module("syft_mpc.hook")
    sys.modules[old] = importlib.import_module(new)
