"""The PySyft 0.2 methods for fixed precision and sharing, attached by :class:`~syft_mpc.hook.TorchHook`.

``torch.Tensor``: ``fix_prec``/``fix_precision``, ``float_prec``/``float_precision``,
``share``, ``encrypt``, ``decrypt``. ``torch.nn.Module``: the same, applied to every
parameter (in place, returning the module). ``torch.optim.Optimizer.fix_precision()``
returns the optimizer itself (it steps shared parameters with its ordinary code).

Float tensors: ``x.share(...)`` on a float tensor raises TypeError (encode first with
``x.fix_prec()``); ``x.encrypt(...)`` encodes floats automatically.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from syft_mpc.fixed_precision import DEFAULT_BASE, DEFAULT_PRECISION, FixedPrecisionTensor
from syft_mpc.shared import SharedTensor, share_tensor

__all__ = ["TENSOR_METHODS", "MODULE_METHODS", "OPTIMIZER_METHODS"]


def _check_kwargs(kwargs: dict[str, Any], what: str) -> None:
    if kwargs:
        raise TypeError(f"{what}() got unexpected keyword arguments {sorted(kwargs)}")


def tensor_fix_precision(
    self: torch.Tensor, base: int = DEFAULT_BASE, precision_fractional: int = DEFAULT_PRECISION, **kwargs: Any
) -> FixedPrecisionTensor:
    """Encodes this tensor in fixed point: ``round(x * base**precision_fractional)`` (default 2^16).

        >>> import torch, syft_mpc as sy
        >>> hook = sy.TorchHook(torch)
        >>> torch.tensor([0.1]).fix_precision(base=10, precision_fractional=3).encoded
        tensor([100])
    """
    kwargs.pop("dtype", None)  # PySyft's storage dtype: always int64 here
    _check_kwargs(kwargs, "fix_precision")
    if type(self).__name__ == "RemoteParameter" or hasattr(self, "_syft_ptr"):
        raise TypeError("fix_precision() of a remote tensor is not supported; .get() it first")
    return FixedPrecisionTensor.from_float(self.detach(), base, precision_fractional)


def tensor_float_precision(self: torch.Tensor) -> torch.Tensor:
    """For a plain tensor: TypeError (only fixed-precision tensors can be decoded)."""
    raise TypeError("this tensor is not in fixed precision; float_precision() applies to x.fix_prec() results")


def tensor_share(
    self: torch.Tensor, *workers: Any, crypto_provider: Any = None, requires_grad: bool = False, **kwargs: Any
) -> SharedTensor:
    """Secret-shares this integer or fixed-precision tensor among ``workers`` (additive shares in Z_2^64).

    Float tensors must be encoded first (``x.fix_prec().share(...)``) or use ``x.encrypt(...)``.

        >>> import torch, syft_mpc as sy
        >>> hook = sy.TorchHook(torch)
        >>> bob, alice, james = (sy.VirtualWorker(hook, id=i) for i in ("bob", "alice", "james"))
        >>> x = torch.tensor([3, 4]).share(bob, alice, crypto_provider=james)
        >>> (x + x).get()
        tensor([6, 8])
    """
    return share_tensor(self, *workers, crypto_provider=crypto_provider, requires_grad=requires_grad, **kwargs)


def tensor_encrypt(
    self: torch.Tensor,
    *args: Any,
    workers: "Sequence[Any] | None" = None,
    crypto_provider: Any = None,
    requires_grad: bool = False,
    base: int = DEFAULT_BASE,
    precision_fractional: int = DEFAULT_PRECISION,
    protocol: str = "snn",
    **kwargs: Any,
) -> SharedTensor:
    """``fix_precision()`` (for float tensors) then ``share(*workers, crypto_provider=...)``."""
    ws = list(workers or []) + list(args)
    if protocol not in ("snn", "fss"):
        raise ValueError(f"unknown protocol {protocol!r}")
    return share_tensor(
        self, *ws, crypto_provider=crypto_provider, requires_grad=requires_grad, auto_encode=True,
        base=base, precision_fractional=precision_fractional, **kwargs,
    )


def tensor_decrypt(self: torch.Tensor) -> torch.Tensor:
    raise TypeError("this tensor is not encrypted; decrypt() applies to shared tensors")


# ---------------------------------------------------------------------- nn.Module


def _replace_params(module: nn.Module, fn: Any) -> nn.Module:
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                new = fn(p)
                m._parameters[name] = nn.Parameter(new, requires_grad=new.requires_grad or False) if not isinstance(new, nn.Parameter) else new
    return module


def module_fix_precision(self: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
    """Encodes every parameter in fixed point, in place; returns the module."""

    def f(p: Any) -> Any:
        if isinstance(p, (FixedPrecisionTensor, SharedTensor)):
            raise TypeError("this module is already in fixed precision")
        return nn.Parameter(tensor_fix_precision(p.data, *args, **kwargs), requires_grad=False)

    return _replace_params(self, f)


def module_float_precision(self: nn.Module) -> nn.Module:
    """Decodes every fixed-precision parameter to a plain float parameter, in place; returns the module."""

    def f(p: Any) -> Any:
        if isinstance(p, SharedTensor):
            raise TypeError("this module is shared: call model.get() first, then float_precision()")
        if isinstance(p, FixedPrecisionTensor):
            return nn.Parameter(p.float_precision(), requires_grad=True)
        return p

    return _replace_params(self, f)


def module_share(self: nn.Module, *workers: Any, crypto_provider: Any = None, requires_grad: bool = False, **kwargs: Any) -> nn.Module:
    """Shares every (fixed-precision) parameter among ``workers``, in place; returns the module."""

    def f(p: Any) -> Any:
        fp = p if isinstance(p, FixedPrecisionTensor) else p.data
        if not isinstance(fp, FixedPrecisionTensor):
            raise TypeError("share the parameters of a fix_precision() module: model.fix_precision().share(...)")
        s = fp.share(*workers, crypto_provider=crypto_provider, requires_grad=False, **kwargs)
        return nn.Parameter(s, requires_grad=requires_grad)

    return _replace_params(self, f)


def module_encrypt(self: nn.Module, *args: Any, workers: Any = None, crypto_provider: Any = None, requires_grad: bool = False, **kwargs: Any) -> nn.Module:
    """``fix_precision()`` then ``share(...)``, in place."""
    if not any(isinstance(p, FixedPrecisionTensor) for p in self.parameters()):
        module_fix_precision(self)
    return module_share(self, *(list(workers or []) + list(args)), crypto_provider=crypto_provider, requires_grad=requires_grad, **kwargs)


def module_get_shared(self: nn.Module) -> nn.Module:
    """Reconstructs every shared parameter (to a fixed-precision parameter), in place."""

    def f(p: Any) -> Any:
        if isinstance(p, SharedTensor):
            return nn.Parameter(p.get(), requires_grad=False)
        return p

    return _replace_params(self, f)


def module_decrypt(self: nn.Module) -> nn.Module:
    """``get()`` then ``float_precision()``, in place."""
    return module_float_precision(module_get_shared(self))


def optimizer_fix_precision(self: Any, *args: Any, **kwargs: Any) -> Any:
    """Returns the optimizer: its ordinary ``step()`` already updates shared fixed-point parameters."""
    return self


TENSOR_METHODS = {
    "fix_precision": tensor_fix_precision,
    "fix_prec": tensor_fix_precision,
    "float_precision": tensor_float_precision,
    "float_prec": tensor_float_precision,
    "share": tensor_share,
    "encrypt": tensor_encrypt,
    "decrypt": tensor_decrypt,
}
MODULE_METHODS = {
    "fix_precision": module_fix_precision,
    "fix_prec": module_fix_precision,
    "float_precision": module_float_precision,
    "float_prec": module_float_precision,
    "share": module_share,
    "encrypt": module_encrypt,
    "decrypt": module_decrypt,
}
OPTIMIZER_METHODS = {"fix_precision": optimizer_fix_precision, "fix_prec": optimizer_fix_precision}
