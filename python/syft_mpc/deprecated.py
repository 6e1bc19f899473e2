"""Old module paths that stay importable for one more release.

Before the package was split into subpackages by role, every module sat at the top
(``syft_mpc.workers``, ``syft_mpc.shared``, ...). :data:`MOVED` maps each old path to its new
one; an import finder installed by ``syft_mpc/__init__`` answers the old paths: importing one
warns (``DeprecationWarning``) and gives the module at its new path, the very same object.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Sequence

__all__ = ["MOVED", "install"]

MOVED = {
    "syft_mpc.allowlist": "syft_mpc.remote.allowlist",
    "syft_mpc.approx": "syft_mpc.encrypted.approx",
    "syft_mpc.cli": "syft_mpc.net.cli",
    "syft_mpc.encrypted_api": "syft_mpc.encrypted.api",
    "syft_mpc.fixed_precision": "syft_mpc.encrypted.fixed_precision",
    "syft_mpc.launch": "syft_mpc.net.launch",
    "syft_mpc.messages": "syft_mpc.remote.messages",
    "syft_mpc.pointers": "syft_mpc.remote.pointers",
    "syft_mpc.rendezvous": "syft_mpc.net.rendezvous",
    "syft_mpc.serde": "syft_mpc.remote.serde",
    "syft_mpc.server": "syft_mpc.net.server",
    "syft_mpc.shared": "syft_mpc.encrypted.tensor",
    "syft_mpc.socket_worker": "syft_mpc.net.socket_worker",
    "syft_mpc.validation_mode": "syft_mpc.encrypted.validation",
    "syft_mpc.workers": "syft_mpc.remote.workers",
}
"""Old module path -> the module that replaced it (this release only)."""

# Paths used before torch is needed (`syft-mpc launch`): they do not assemble the PySyft layer.
_WITHOUT_TORCH = {"syft_mpc.cli", "syft_mpc.launch", "syft_mpc.rendezvous"}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths (after every other finder) and loads each as its new module."""

    def find_spec(
        self, fullname: str, path: "Sequence[str] | None", target: "ModuleType | None" = None
    ) -> "importlib.machinery.ModuleSpec | None":
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there (the old path will be removed in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        if spec.name not in _WITHOUT_TORCH:
            importlib.import_module("syft_mpc.hook")  # as `import syft_mpc.workers` once did: handlers registered
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        pass  # the new module ran when it was imported


def install() -> None:
    """Lets the old paths be imported (idempotent)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
