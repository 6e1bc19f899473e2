"""The PySyft 0.2 methods for fixed precision and sharing, attached by :class:`~syft_mpc.hook.TorchHook`.

``torch.Tensor``: ``fix_prec``/``fix_precision``, ``float_prec``/``float_precision``,
``share``, ``encrypt``, ``decrypt``. ``torch.nn.Module``: the same, applied to every
parameter (in place, returning the module). ``torch.optim.Optimizer.fix_precision()``
returns the optimizer itself (it steps shared parameters with its ordinary code; adaptive
optimizers get their state created in shares first).

Float tensors: ``x.share(...)`` on a float tensor raises TypeError (encode first with
``x.fix_prec()``); ``x.encrypt(...)`` encodes floats automatically.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from syft_mpc.errors import UnsupportedOperationError
from syft_mpc.encrypted.fixed_precision import FixedPrecisionTensor
from syft_mpc.encrypted.tensor import SharedTensor, lift_at, share_encoded, sharing_group
from syft_mpc.fixed_point import DEFAULT_BASE, DEFAULT_PRECISION, scale_of
from syft_mpc.remote.messages import MpcShareOut, new_id

__all__ = ["TENSOR_METHODS", "MODULE_METHODS", "OPTIMIZER_METHODS", "POINTER_METHODS", "FixedPrecisionPointer", "share_remote"]


PROTOCOLS = ("snn", "fss")
"""PySyft's protocol names, both accepted by ``share(..., protocol=...)``. PySyft had two ways to
compare shared values: "snn" (SecureNN, Wagh et al. 2019) and "fss" (function secret sharing,
AriaNN, Ryffel et al. 2020). Here both name the one protocol this library runs: additive shares
over Z_2^64 with a crypto provider that deals Beaver triples and the correlated randomness of
its comparison (docs/ENCRYPTED_TENSORS.md); results are the same whichever name is given."""


def check_protocol(protocol: Any) -> str:
    """Returns ``protocol`` if it is one of :data:`PROTOCOLS`; raises ValueError naming them otherwise."""
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"unknown protocol {protocol!r}: use 'snn' or 'fss' (PySyft's names; both run this library's "
            "dealer-assisted additive sharing, see docs/ENCRYPTED_TENSORS.md)"
        )
    return str(protocol)


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
        return pointer_fix_precision(getattr(self, "_syft_ptr"), base, precision_fractional)  # type: ignore[return-value]
    return FixedPrecisionTensor.from_float(self.detach(), base, precision_fractional)


def tensor_float_precision(self: torch.Tensor) -> torch.Tensor:
    """For a plain tensor: TypeError (only fixed-precision tensors can be decoded)."""
    raise TypeError("this tensor is not in fixed precision; float_precision() applies to x.fix_prec() results")


def share_tensor(
    x: torch.Tensor,
    *workers: Any,
    crypto_provider: Any = None,
    requires_grad: bool = False,
    auto_encode: bool = False,
    base: int = DEFAULT_BASE,
    precision_fractional: int = DEFAULT_PRECISION,
    **kwargs: Any,
) -> SharedTensor:
    """``x.share(...)`` for a plain tensor: integer (and bool) tensors are shared as they are.

    A float tensor must be encoded first (``x.fix_prec().share(...)``); ``x.encrypt(...)``
    does both. A float tensor shared directly raises TypeError. ``protocol`` ("snn" or "fss",
    PySyft's names) is checked and accepted: see :data:`PROTOCOLS`.
    """
    if "protocol" in kwargs:
        check_protocol(kwargs.pop("protocol"))
    if isinstance(x, FixedPrecisionTensor):
        return share_encoded(
            x.encoded, list(workers), crypto_provider, scale=x.scale, base=x.base,
            precision=x.precision_fractional, dtype=x.dtype, requires_grad=requires_grad, **kwargs,
        )
    if x.dtype.is_floating_point or x.dtype.is_complex:
        if not auto_encode:
            raise TypeError(
                f"a {x.dtype} tensor cannot be shared as it is: encode it first with "
                "x.fix_precision().share(...), or use x.encrypt(workers=[...], crypto_provider=...)"
            )
        fp = FixedPrecisionTensor.from_float(x, base, precision_fractional)
        return share_tensor(fp, *workers, crypto_provider=crypto_provider, requires_grad=requires_grad, **kwargs)
    return share_encoded(x.to(torch.int64), list(workers), crypto_provider, scale=1, dtype=torch.int64, requires_grad=requires_grad, **kwargs)


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
    if type(self).__name__ == "RemoteParameter" or hasattr(self, "_syft_ptr"):  # a sent parameter
        return pointer_share(getattr(self, "_syft_ptr"), *workers, crypto_provider=crypto_provider, requires_grad=requires_grad, **kwargs)
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
    check_protocol(protocol)
    return share_tensor(
        self, *ws, crypto_provider=crypto_provider, requires_grad=requires_grad, auto_encode=True,
        base=base, precision_fractional=precision_fractional, **kwargs,
    )


def tensor_decrypt(self: torch.Tensor) -> torch.Tensor:
    raise TypeError("this tensor is not encrypted; decrypt() applies to shared tensors")


# ---------------------------------------------------------------------- nn.Module


def _replace_params(module: nn.Module, fn: Any, buffers: "Any | None" = None) -> nn.Module:
    """Applies ``fn`` to every parameter and ``buffers`` (if given) to every floating-point buffer
    (a norm layer's running statistics; integer buffers such as ``num_batches_tracked`` stay public)."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                new = fn(p)
                m._parameters[name] = nn.Parameter(new, requires_grad=new.requires_grad or False) if not isinstance(new, nn.Parameter) else new
        if buffers is not None:
            for name, b in list(m._buffers.items()):
                if b is not None and (b.dtype.is_floating_point or isinstance(b, (FixedPrecisionTensor, SharedTensor))):
                    m._buffers[name] = buffers(b)
    return module


def module_fix_precision(self: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
    """Encodes every parameter in fixed point, in place; returns the module."""

    def f(p: Any) -> Any:
        if isinstance(p, (FixedPrecisionTensor, SharedTensor)):
            raise TypeError("this module is already in fixed precision")
        return nn.Parameter(tensor_fix_precision(p.data, *args, **kwargs), requires_grad=False)

    def fb(b: Any) -> Any:
        return b if isinstance(b, (FixedPrecisionTensor, SharedTensor)) else tensor_fix_precision(b, *args, **kwargs)

    return _replace_params(self, f, fb)


def module_float_precision(self: nn.Module) -> nn.Module:
    """Decodes every fixed-precision parameter to a plain float parameter, in place; returns the module."""

    def f(p: Any) -> Any:
        if isinstance(p, SharedTensor):
            raise TypeError("this module is shared: call model.get() first, then float_precision()")
        if isinstance(p, FixedPrecisionTensor):
            return nn.Parameter(p.float_precision(), requires_grad=True)
        return p

    def fb(b: Any) -> Any:
        if isinstance(b, SharedTensor):
            raise TypeError("this module is shared: call model.get() first, then float_precision()")
        return b.float_precision() if isinstance(b, FixedPrecisionTensor) else b

    return _replace_params(self, f, fb)


def module_share(self: nn.Module, *workers: Any, crypto_provider: Any = None, requires_grad: bool = False, **kwargs: Any) -> nn.Module:
    """Shares every (fixed-precision) parameter among ``workers``, in place; returns the module.

    All or nothing: if sharing fails (a bad argument, a worker that cannot be reached), the
    parameters shared so far are reconstructed and every parameter is decoded back to floating
    point, so the module is as it was before ``fix_precision()`` and
    ``model.fix_precision().share(...)`` can simply be run again with the error fixed."""
    try:
        if "protocol" in kwargs:
            check_protocol(kwargs["protocol"])
        _check_kwargs({k: v for k, v in kwargs.items() if k not in ("protocol", "truncation")}, "share")
        return _module_share(self, *workers, crypto_provider=crypto_provider, requires_grad=requires_grad, **kwargs)
    except BaseException:
        try:
            module_float_precision(module_get_shared(self))
        except Exception:  # pragma: no cover - the original error is the one to report
            pass
        raise


def _module_share(self: nn.Module, *workers: Any, crypto_provider: Any = None, requires_grad: bool = False, **kwargs: Any) -> nn.Module:
    def f(p: Any) -> Any:
        fp = p if isinstance(p, FixedPrecisionTensor) else p.data
        if not isinstance(fp, FixedPrecisionTensor):
            raise TypeError("share the parameters of a fix_precision() module: model.fix_precision().share(...)")
        s = share_tensor(fp, *workers, crypto_provider=crypto_provider, requires_grad=False, **kwargs)
        return nn.Parameter(s, requires_grad=requires_grad)

    def fb(b: Any) -> Any:  # running statistics, updated in shares by training
        if isinstance(b, FixedPrecisionTensor):
            return share_tensor(b, *workers, crypto_provider=crypto_provider, requires_grad=False, **kwargs)
        return b

    return _replace_params(self, f, fb)


def module_encrypt(
    self: nn.Module, *args: Any, workers: Any = None, crypto_provider: Any = None, requires_grad: bool = False,
    base: int = DEFAULT_BASE, precision_fractional: int = DEFAULT_PRECISION, **kwargs: Any,
) -> nn.Module:
    """``fix_precision(base=..., precision_fractional=...)`` then ``share(...)``, in place."""
    if not any(isinstance(p, FixedPrecisionTensor) for p in self.parameters()):
        module_fix_precision(self, base=base, precision_fractional=precision_fractional)
    return module_share(self, *(list(workers or []) + list(args)), crypto_provider=crypto_provider, requires_grad=requires_grad, **kwargs)


def module_get_shared(self: nn.Module) -> nn.Module:
    """Reconstructs every shared parameter (to a fixed-precision parameter), in place."""

    def f(p: Any) -> Any:
        if isinstance(p, SharedTensor):
            return nn.Parameter(p.get(), requires_grad=False)
        return p

    return _replace_params(self, f, lambda b: b.get() if isinstance(b, SharedTensor) else b)


def module_decrypt(self: nn.Module) -> nn.Module:
    """``get()`` then ``float_precision()``, in place."""
    return module_float_precision(module_get_shared(self))


# ---------------------------------------------------------------------- optimizers

ADAPTIVE_MIN_EPS_UNITS = 256
"""Adaptive optimizers on shared parameters use ``eps ≥ 256`` units of the parameters' fixed-point
resolution (2^-8 at 16 fractional bits): 1/(√v̂ + eps) then stays within the range where the
shared reciprocal converges and a gradient's own rounding (a few units) moves the update by
≲ 1 % (docs/ENCRYPTED_TENSORS.md, *Optimizers*)."""
ACCUMULATOR_PRECISION = 32
"""Fractional bits (base 2) of the moment estimates kept for shared parameters: g² of a 16-bit
gradient is exact there, where at 16 bits (1−β2)·g² ≈ 1e-9 would round to 0."""


def _state_spec(opt: Any, group: dict[str, Any]) -> "dict[str, bool] | None":
    """The state tensors torch's ``step()`` reads for one parameter of ``opt`` (name → kept at
    ACCUMULATOR_PRECISION), or None when there is nothing to prepare (SGD). Only tensors
    that are never multiplied by one another may be high-precision (their product would not fit
    the ring): RMSprop's centered ``grad_avg`` is squared, so it stays at the parameter's precision."""
    if isinstance(opt, torch.optim.Adam):  # and AdamW, its subclass
        spec = {"exp_avg": True, "exp_avg_sq": True}
        if group.get("amsgrad"):
            spec["max_exp_avg_sq"] = True
        return spec
    if isinstance(opt, torch.optim.RMSprop):
        spec = {"square_avg": True}
        if group.get("momentum", 0) > 0:
            spec["momentum_buffer"] = False
        if group.get("centered"):
            spec["grad_avg"] = False
        return spec
    if isinstance(opt, torch.optim.Adagrad):
        return {"sum": True}
    return None


_REFUSED = tuple(
    getattr(torch.optim, n) for n in ("Adamax", "NAdam", "RAdam", "Adadelta", "SparseAdam")
    if hasattr(torch.optim, n)
)


def _prepare_shared_optimizer(opt: Any) -> None:
    """Makes ``opt``'s ordinary ``step()`` work on its shared parameters (Kingma & Ba 2015 for Adam).

    Adam, AdamW, RMSprop and Adagrad: their state (moment estimates) is created as shared zeros,
    the second moments at ACCUMULATOR_PRECISION fractional bits, and ``eps`` is raised to
    ADAPTIVE_MIN_EPS_UNITS units (with a warning). Other adaptive optimizers raise
    UnsupportedOperationError; SGD needs nothing."""
    shared = [p for g in opt.param_groups for p in g["params"] if isinstance(p, SharedTensor)]
    if not shared:
        return
    name = type(opt).__name__
    if isinstance(opt, _REFUSED):
        raise UnsupportedOperationError(
            f"torch.optim.{name} cannot step shared parameters (its update has no secure implementation here). "
            "Use torch.optim.SGD, Adam, AdamW, RMSprop or Adagrad; see docs/ENCRYPTED_TENSORS.md"
        )
    for group in opt.param_groups:
        spec = _state_spec(opt, group)
        if spec is None:
            continue  # SGD: its momentum buffer is a clone of the (shared) gradient
        if group.get("fused") or group.get("capturable") or group.get("differentiable"):
            raise UnsupportedOperationError(f"torch.optim.{name} on shared parameters: fused, capturable and differentiable are not supported")
        for p in group["params"]:
            if not isinstance(p, SharedTensor):
                continue
            if p.base != 2 or p.precision_fractional > DEFAULT_PRECISION:
                raise UnsupportedOperationError(
                    f"torch.optim.{name} on shared parameters needs base 2 with at most {DEFAULT_PRECISION} fractional bits"
                )
            min_eps = ADAPTIVE_MIN_EPS_UNITS / p.scale
            if group["eps"] < min_eps:
                warnings.warn(
                    f"torch.optim.{name}: eps raised from {group['eps']:g} to {min_eps:g} for shared parameters "
                    f"({ADAPTIVE_MIN_EPS_UNITS} units of their fixed-point resolution; see docs/ENCRYPTED_TENSORS.md)",
                    stacklevel=3,
                )
                group["eps"] = min_eps
            state = opt.state[p]
            if "step" not in state:
                state["step"] = torch.tensor(0.0, dtype=torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32)
            for key, high in spec.items():
                v = state.get(key)
                if isinstance(v, SharedTensor):
                    continue
                # a plain initial value (Adagrad's initial_accumulator_value, made by full_like) is public
                init = v.detach().to(torch.float64) if isinstance(v, torch.Tensor) else torch.zeros(p.shape, dtype=torch.float64)
                state[key] = lift_at(init, p, ACCUMULATOR_PRECISION if high else p.precision_fractional)


def _step_pre_hook(opt: Any, args: Any, kwargs: Any) -> None:
    _prepare_shared_optimizer(opt)


_hook_handle: Any = None


def install_optimizer_check() -> None:
    """Registers (once) a global optimizer step pre-hook that prepares adaptive optimizers for
    shared parameters (and refuses the unsupported ones); see :func:`_prepare_shared_optimizer`."""
    global _hook_handle
    if _hook_handle is None:
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        _hook_handle = register_optimizer_step_pre_hook(_step_pre_hook)


def optimizer_fix_precision(self: Any, *args: Any, **kwargs: Any) -> Any:
    """Returns the optimizer: its ordinary ``step()`` updates shared fixed-point parameters.

    SGD as it is; Adam, AdamW, RMSprop and Adagrad with their state kept in shares (second
    moments at 32 fractional bits) and ``eps`` raised to at least 2^-8 (see
    docs/ENCRYPTED_TENSORS.md); other adaptive optimizers raise :class:`UnsupportedOperationError`.

        >>> import torch, syft_mpc as sy
        >>> hook = sy.TorchHook(torch)
        >>> bob, alice, james = (sy.VirtualWorker(hook, id=i) for i in ("bob", "alice", "james"))
        >>> model = torch.nn.Linear(2, 1).fix_precision().share(bob, alice, crypto_provider=james, requires_grad=True)
        >>> opt = torch.optim.Adam(model.parameters(), lr=0.1, eps=2**-8).fix_precision()
        >>> model(torch.ones(1, 2).fix_prec().share(bob, alice, crypto_provider=james)).sum().backward()
        >>> opt.step()
    """
    _prepare_shared_optimizer(self)
    return self


TENSOR_METHODS: dict[str, Callable[..., Any]] = {
    "fix_precision": tensor_fix_precision,
    "fix_prec": tensor_fix_precision,
    "float_precision": tensor_float_precision,
    "float_prec": tensor_float_precision,
    "share": tensor_share,
    "encrypt": tensor_encrypt,
    "decrypt": tensor_decrypt,
}
MODULE_METHODS: dict[str, Callable[..., Any]] = {
    "fix_precision": module_fix_precision,
    "fix_prec": module_fix_precision,
    "float_precision": module_float_precision,
    "float_prec": module_float_precision,
    "share": module_share,
    "encrypt": module_encrypt,
    "decrypt": module_decrypt,
}


# ---------------------------------------------------------------------- pointers (data stays with its owner)


def share_remote(
    ptr: Any,
    workers: Sequence[Any],
    crypto_provider: Any,
    *,
    base: int = DEFAULT_BASE,
    precision: "int | None" = None,
    requires_grad: bool = False,
    truncation: "str | None" = None,
) -> SharedTensor:
    """Shares the tensor ``ptr`` points to without bringing it here: its location encodes it
    (``precision`` given: fixed point; None: an integer tensor as it is), splits it and stores
    one share on each of ``workers`` itself (:class:`~syft_mpc.remote.messages.MpcShareOut`). The
    driver only learns the shape. The original tensor stays where it was. As in PySyft 0.2 (where
    the result is a pointer to the shared tensor), ``.get()`` of the result returns it still
    shared; ``.decrypt()`` reveals it."""
    if ptr.dtype.is_floating_point and precision is None:
        raise TypeError(
            f"a {ptr.dtype} tensor cannot be shared as it is: encode it first with "
            "ptr.fix_precision().share(...), or use ptr.encrypt(workers=[...], crypto_provider=...)"
        )
    scale = 1 if precision is None else scale_of(base, precision)
    group = sharing_group(workers, crypto_provider, base=base, scale=scale, requires_grad=requires_grad, truncation=truncation)
    sid = new_id()
    msg = MpcShareOut(ptr.id_at_location, [w.id for w in group.workers], sid, base, -1 if precision is None else precision)
    shape = ptr._send(msg)
    dtype = torch.int64 if precision is None else (ptr.dtype if ptr.dtype.is_floating_point else torch.float32)
    out = SharedTensor.from_stored(
        group, sid, tuple(shape), scale=scale, base=base, precision=DEFAULT_PRECISION if precision is None else precision,
        dtype=dtype, requires_grad=requires_grad,
    )
    out._from_pointer = True  # PySyft's pointer to a shared tensor: .get() keeps it shared
    return out


class FixedPrecisionPointer:
    """``ptr.fix_prec()``: the remote tensor, to be encoded in fixed point *where it lives*.

    Encoding happens on the pointer's location when the tensor is shared
    (``ptr.fix_prec().share(bob, alice, crypto_provider=james)``), so the plaintext never
    leaves its owner. ``.get()`` brings it here as a :class:`FixedPrecisionTensor`;
    ``.float_precision()`` gives the plain pointer back.
    """

    __slots__ = ("ptr", "base", "precision_fractional")

    def __init__(self, ptr: Any, base: int = DEFAULT_BASE, precision_fractional: int = DEFAULT_PRECISION) -> None:
        scale_of(base, precision_fractional)  # checks the pair
        self.ptr, self.base, self.precision_fractional = ptr, base, precision_fractional

    location = property(lambda self: self.ptr.location)
    shape = property(lambda self: self.ptr.shape)
    dtype = property(lambda self: self.ptr.dtype)

    def __repr__(self) -> str:
        return f"FixedPrecisionPointer(base={self.base}, precision_fractional={self.precision_fractional})>{self.ptr!r}"

    def share(self, *workers: Any, crypto_provider: Any = None, requires_grad: bool = False, **kwargs: Any) -> SharedTensor:
        truncation = kwargs.pop("truncation", None)
        check_protocol(kwargs.pop("protocol", "snn"))
        _check_kwargs(kwargs, "share")
        return share_remote(
            self.ptr, workers, crypto_provider, base=self.base, precision=self.precision_fractional,
            requires_grad=requires_grad, truncation=truncation,
        )

    def get(self) -> FixedPrecisionTensor:
        return FixedPrecisionTensor.from_float(self.ptr.get(), self.base, self.precision_fractional)

    def float_precision(self) -> Any:
        return self.ptr

    float_prec = float_precision

    def fix_precision(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("this pointer is already in fixed precision")

    fix_prec = fix_precision


def pointer_fix_precision(self: Any, base: int = DEFAULT_BASE, precision_fractional: int = DEFAULT_PRECISION, **kwargs: Any) -> FixedPrecisionPointer:
    """``ptr.fix_prec()``: see :class:`FixedPrecisionPointer` (the data is not touched until shared)."""
    kwargs.pop("dtype", None)
    _check_kwargs(kwargs, "fix_precision")
    self._check_alive()
    if not (self.dtype.is_floating_point or self.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)):
        raise TypeError(f"fix_precision() of a {self.dtype} tensor is not supported")
    return FixedPrecisionPointer(self, base, precision_fractional)


def pointer_share(self: Any, *workers: Any, crypto_provider: Any = None, requires_grad: bool = False, **kwargs: Any) -> SharedTensor:
    """``ptr.share(bob, alice, crypto_provider=james)`` for an integer remote tensor (floats: ``ptr.fix_prec()`` first)."""
    truncation = kwargs.pop("truncation", None)
    check_protocol(kwargs.pop("protocol", "snn"))
    _check_kwargs(kwargs, "share")
    return share_remote(self, workers, crypto_provider, precision=None, requires_grad=requires_grad, truncation=truncation)


def pointer_encrypt(
    self: Any, *args: Any, workers: "Sequence[Any] | None" = None, crypto_provider: Any = None, requires_grad: bool = False,
    base: int = DEFAULT_BASE, precision_fractional: int = DEFAULT_PRECISION, protocol: str = "snn", **kwargs: Any,
) -> SharedTensor:
    """``fix_precision()`` (float tensors) then ``share(...)``, done by the pointer's location."""
    check_protocol(protocol)
    ws = list(workers or []) + list(args)
    precision = precision_fractional if self.dtype.is_floating_point else None
    return share_remote(self, ws, crypto_provider, base=base, precision=precision, requires_grad=requires_grad, truncation=kwargs.pop("truncation", None))


POINTER_METHODS: dict[str, Callable[..., Any]] = {
    "fix_precision": pointer_fix_precision,
    "fix_prec": pointer_fix_precision,
    "share": pointer_share,
    "encrypt": pointer_encrypt,
}

OPTIMIZER_METHODS: dict[str, Callable[..., Any]] = {"fix_precision": optimizer_fix_precision, "fix_prec": optimizer_fix_precision}
