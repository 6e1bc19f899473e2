"""Fixed-precision tensors: ``x.fix_prec()`` / ``x.float_prec()`` (PySyft 0.2 API).

A :class:`FixedPrecisionTensor` holds ``round(x * base**precision_fractional)`` as an
``int64`` tensor (the ring element that gets secret-shared by ``.share()``) and
behaves like the float tensor it encodes: an operation decodes its operands, runs in
float64 and re-encodes (rounding to the fixed-point grid after every op, as integer
fixed-point arithmetic with truncation does). Default: base 2, 16 fractional bits
(resolution 2^-16 ≈ 1.5e-5), values |x| < 2^47.

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> x = torch.tensor([0.5, -1.25]).fix_prec()
    >>> x
    FixedPrecisionTensor(base=2, precision_fractional=16)>tensor([ 0.5000, -1.2500])
    >>> x.encoded
    tensor([ 32768, -81920])
    >>> (x * 2).float_prec()
    tensor([ 1.0000, -2.5000])
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch
from torch.utils._pytree import tree_leaves, tree_map

from syft_mpc.fixed_point import DEFAULT_BASE, DEFAULT_PRECISION, decode, encode, scale_of

__all__ = ["FixedPrecisionTensor"]


def outside_inference_mode() -> ContextManager[Any]:
    """Where this package's wrapper tensors are made: never as inference tensors. Under
    ``torch.inference_mode()`` a wrapper made as one cannot be the view that torch's
    ADInplaceOrView kernel records of a normal wrapper ("Cannot set version_counter for
    inference tensor"); the wrappers' own payloads never see autograd either way."""
    return torch.inference_mode(False) if torch.is_inference_mode_enabled() else contextlib.nullcontext()


class FixedPrecisionTensor(torch.Tensor):
    """A float tensor stored in fixed point (``int64`` ring elements); see the module docstring.

    Attributes: ``encoded`` (the int64 tensor), ``base``, ``precision_fractional``.
    ``.float_precision()`` decodes; ``.share(*workers, crypto_provider=...)`` (attached to
    every tensor by ``sy.TorchHook``) secret-shares the encoded values.
    """

    encoded: torch.Tensor
    base: int
    precision_fractional: int

    @staticmethod
    def __new__(cls, encoded: torch.Tensor, base: int = DEFAULT_BASE, precision: int = DEFAULT_PRECISION, dtype: torch.dtype = torch.float32, requires_grad: bool = False) -> "FixedPrecisionTensor":
        with outside_inference_mode():
            r = torch.Tensor._make_wrapper_subclass(cls, encoded.shape, dtype=dtype, device=torch.device("cpu"), requires_grad=requires_grad)
        r.encoded = encoded
        r.base = base
        r.precision_fractional = precision
        return r

    # torch's stubs type the base's as a classmethod; the disabled impl is a builtin, called without cls
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    @classmethod
    def from_float(cls, x: torch.Tensor, base: int = DEFAULT_BASE, precision_fractional: int = DEFAULT_PRECISION) -> "FixedPrecisionTensor":
        dtype = x.dtype if x.dtype.is_floating_point else torch.float32
        return cls(encode(x, base, precision_fractional), base, precision_fractional, dtype, requires_grad=False)

    @property
    def scale(self) -> int:
        return scale_of(self.base, self.precision_fractional)

    def _value(self) -> torch.Tensor:
        return decode(self.encoded, self.base, self.precision_fractional, torch.float64)

    def float_precision(self) -> torch.Tensor:
        """The decoded float tensor (a plain torch tensor)."""
        return self._value().to(self.dtype)

    float_prec = float_precision

    def fix_precision(self, *args: Any, **kwargs: Any) -> "FixedPrecisionTensor":
        raise TypeError("this tensor is already in fixed precision; call .float_precision() first to change its precision")

    fix_prec = fix_precision

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        return f"FixedPrecisionTensor(base={self.base}, precision_fractional={self.precision_fractional})>{self.float_precision()!r}"

    # torch's stubs type the base's as the disabled builtin (no cls); torch calls a subclass's as a classmethod
    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:  # type: ignore[override]
        if any(t is not FixedPrecisionTensor for t in types):
            return NotImplemented  # a shared operand: the shared tensor's rules apply
        kwargs = kwargs or {}
        fmt: list[tuple[int, int]] = []

        def unwrap(v: Any) -> Any:
            if isinstance(v, FixedPrecisionTensor):
                fmt.append((v.base, v.precision_fractional))
                return v._value()
            return v

        uargs, ukwargs = tree_map(unwrap, (args, kwargs))
        if len(set(fmt)) > 1:
            raise ValueError(f"this operation mixes fixed-point tensors of different precisions: {sorted(set(fmt))}")
        base, prec = fmt[0]
        dtype = next(v.dtype for v in tree_leaves((args, kwargs)) if isinstance(v, FixedPrecisionTensor))
        out = func(*uargs, **ukwargs)
        if func._schema.name.endswith("_"):  # in place: write the results back into our encodings
            multi = isinstance(args[0], (list, tuple))
            targets = list(args[0]) if multi else [args[0]]
            temps = list(uargs[0]) if multi else [uargs[0]]
            for t, u in zip(targets, temps):
                if isinstance(t, FixedPrecisionTensor):
                    t.encoded = encode(u, base, prec)
            return None if multi else args[0]

        def wrap(v: Any) -> Any:
            if isinstance(v, torch.Tensor) and v.dtype.is_floating_point:
                return FixedPrecisionTensor(encode(v, base, prec), base, prec, dtype)
            return v

        return tree_map(wrap, out)

