"""Validation mode for shared tensors (as CrypTen's): **debugging only, it reveals everything**.

With validation on, every secure operation (every aten op a :class:`~syft_mpc.encrypted.tensor.SharedTensor`
reaches) also reconstructs its inputs and outputs in the driver, runs the same aten op in
plaintext torch (float64) and checks ``|mpc − plain| <= atol + rtol·|plain|``; a mismatch raises
:class:`ValidationError` naming the op and the worst element. Only the outermost op is checked
(the ops a protocol issues internally are not), so each check compares a whole op, including
its approximation, with torch. Every intermediate value is opened to the driver: never switch
this on with data that must stay private.

Tolerances (defaults): exact ring ops and Beaver products ``atol=1e-3, rtol=1e-3``;
approximations (exp, log, reciprocal, division by a share, sqrt, sigmoid, tanh, erf, GELU, SiLU, softplus, ELU, norm layers, softmax,
log_softmax, losses and their backward passes) ``atol=0.07, rtol=0.05``, the documented
error bounds of docs/ENCRYPTED_TENSORS.md on their stated ranges.

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob, alice, james = (sy.VirtualWorker(hook, id=i) for i in ("vbob", "valice", "vjames"))
    >>> x = torch.tensor([1.5, -2.0]).fix_prec().share(bob, alice, crypto_provider=james)
    >>> with sy.validation():
    ...     y = (x * x).relu()
    >>> sy.validation_enabled()
    False
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator

import torch
from torch.utils._pytree import tree_flatten, tree_map

from syft_mpc.errors import ValidationError

__all__ = ["ValidationError", "set_validation", "validation", "validation_enabled"]

aten = torch.ops.aten


_STATE: dict[str, Any] = {"on": False, "atol": None, "rtol": None}
_LOCAL = threading.local()

EXACT_TOL = (1e-3, 1e-3)
APPROX_TOL = (0.07, 0.05)
_APPROX_NAMES = (
    "exp", "log", "reciprocal", "div", "sqrt", "rsqrt", "sigmoid", "tanh", "softmax", "log_softmax",
    "_softmax", "_log_softmax", "cross_entropy", "nll_loss", "mse_loss", "pow", "addcdiv", "lerp",
    "_softmax_backward_data", "_log_softmax_backward_data", "sigmoid_backward", "tanh_backward",
    "nll_loss_backward", "mse_loss_backward", "nll_loss_forward", "mean",
    "erf", "gelu", "gelu_backward", "silu", "silu_backward", "softplus", "softplus_backward", "elu", "elu_backward",
    "native_batch_norm", "native_batch_norm_backward", "native_layer_norm", "native_layer_norm_backward",
    "native_group_norm", "native_group_norm_backward", "var_mean", "var",
    "_safe_softmax", "logsumexp", "expm1", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention_for_cpu_backward", "_scaled_dot_product_attention_math",
    "_native_multi_head_attention", "_transformer_encoder_layer_fwd",
)
MASKED_BELOW = -1e4
"""A masked attention score: −inf or finfo.min in plaintext, −2^20 on shares (encrypted/attention.py)."""
# Outputs that are not comparable with torch's: the secret argmax indices of max/min/max_pool2d
# are window-local (torch's are flat) and may pick another element on ties.
_SKIP_OUTPUTS: dict[Any, tuple[int, ...]] = {
    aten.max_pool2d_with_indices.default: (1,),
    aten.adaptive_max_pool2d.default: (1,),
    aten.max.dim: (1,),
    aten.min.dim: (1,),
}
# Ops torch cannot replay on revealed values: they need state kept by the shared forward pass (an
# LSTM layer's workspace holds its gates; torch's is an opaque oneDNN buffer, and its kernel takes
# no float64), or they draw randomness (dropout's mask) that a replay would draw differently.
_NO_REFERENCE = {
    aten.max_pool2d_with_indices_backward.default,
    aten.adaptive_max_pool2d_backward.default,
    aten.mkldnn_rnn_layer.default,
    aten.mkldnn_rnn_layer_backward.default,
    aten.bernoulli_.float,
    aten.empty_like.default,  # uninitialized memory in plaintext
    aten.new_empty.default,
    aten.new_empty_strided.default,
}


def set_validation(enabled: bool = True, *, atol: "float | None" = None, rtol: "float | None" = None) -> None:
    """Turns validation mode on or off for the whole process (see the module docstring:
    it reveals every intermediate value). ``atol``/``rtol`` override the default tolerances."""
    _STATE["on"] = bool(enabled)
    _STATE["atol"], _STATE["rtol"] = atol, rtol


def validation_enabled() -> bool:
    return bool(_STATE["on"])


@contextlib.contextmanager
def validation(enabled: bool = True, *, atol: "float | None" = None, rtol: "float | None" = None) -> Iterator[None]:
    """``with sy.validation(): ...``: validation mode inside the block (restores the previous setting)."""
    old = dict(_STATE)
    set_validation(enabled, atol=atol, rtol=rtol)
    try:
        yield
    finally:
        _STATE.update(old)


def _op_name(func: Any) -> str:
    return str(getattr(func, "_schema", None) and func._schema.name or func).split("::")[-1]


def _tolerance(func: Any) -> tuple[float, float]:
    name = _op_name(func).lstrip("_").removeprefix("foreach_").rstrip("_")
    atol, rtol = APPROX_TOL if name in {n.lstrip("_") for n in _APPROX_NAMES} else EXACT_TOL
    return (_STATE["atol"] if _STATE["atol"] is not None else atol, _STATE["rtol"] if _STATE["rtol"] is not None else rtol)


def _plain(v: Any, reveal: Callable[[Any], Any]) -> Any:
    """A plaintext copy of ``v``: what ``reveal`` makes of it (shares reconstructed and decoded,
    to float64), or, where ``reveal`` gives ``v`` back, a public tensor (floats as float64)."""
    r = reveal(v)
    if r is not v:
        return r
    if isinstance(v, torch.Tensor):
        return v.detach().to(torch.float64) if v.dtype.is_floating_point else v.detach().clone()
    return v


def _compare(func: Any, ours: Any, ref: Any, what: str) -> None:
    if not isinstance(ref, torch.Tensor) or not isinstance(ours, torch.Tensor):
        return
    a = ours.to(torch.float64)
    b = ref.to(torch.float64)
    if a.shape != b.shape:
        raise ValidationError(f"validation: {_op_name(func)} {what}: shape {tuple(a.shape)} on shares, {tuple(b.shape)} in plaintext")
    atol, rtol = _tolerance(func)
    err = (a - b).abs()
    err = torch.where((a <= MASKED_BELOW) & (b <= MASKED_BELOW), torch.zeros((), dtype=err.dtype), err)
    b = torch.where(torch.isfinite(b), b, torch.zeros((), dtype=b.dtype))
    bound = atol + rtol * b.abs()
    bad = err > bound
    if bool(bad.any()) or bool(torch.isnan(a).any() != torch.isnan(b).any()):
        i = int((err - bound).reshape(-1).argmax())
        raise ValidationError(
            f"validation: {_op_name(func)} {what} differs from plaintext torch: element {i} is "
            f"{a.reshape(-1)[i].item():.6g} on shares, {b.reshape(-1)[i].item():.6g} in plaintext "
            f"(|diff| {err.reshape(-1)[i].item():.3g} > atol {atol} + rtol {rtol}·|plain|; "
            f"{int(bad.sum())} of {bad.numel()} elements out of tolerance)"
        )


def checked(func: Any, impl: Callable[..., Any], args: Any, kwargs: Any, reveal: Callable[[Any], Any]) -> Any:
    """Runs ``impl(*args, **kwargs)`` (the secure op) and checks it against ``func`` in plaintext.

    ``reveal`` opens one value of the secure op: a shared (or fixed-point) tensor's plaintext,
    decoded to float64; anything else it returns as it is. (The shared tensor's dispatch passes
    it, so this module needs nothing of the tensor types.)"""
    if getattr(_LOCAL, "depth", 0) > 0 or func in _NO_REFERENCE:
        return impl(*args, **kwargs)
    _LOCAL.depth = 1
    try:
        plain_args, plain_kwargs = tree_map(lambda v: _plain(v, reveal), (args, kwargs))
        out = impl(*args, **kwargs)
        ref = func(*plain_args, **plain_kwargs)
        inplace = _op_name(func).endswith("_")
        if inplace:  # compare what was written: the first argument (a tensor or a list of them)
            ours_l, _ = tree_flatten(args[0])
            ref_l, _ = tree_flatten(plain_args[0])
        else:
            ours_l, _ = tree_flatten(out)
            ref_l, _ = tree_flatten(ref)
        skip = _SKIP_OUTPUTS.get(func, ())
        for k, (o, r) in enumerate(zip(ours_l, ref_l)):
            if k in skip:
                continue
            _compare(func, _plain(o, reveal), r, f"output {k}" if len(ours_l) > 1 else "result")
        return out
    finally:
        _LOCAL.depth = 0
