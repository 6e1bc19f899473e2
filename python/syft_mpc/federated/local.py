"""Worker-side federated routines: local training (:class:`LocalTrain`) and noise shares (:class:`AddNoiseShare`).

A worker never runs code it received. :class:`LocalTrain` carries the model as *data*: a
spec (a list of ``[layer name, arguments]`` for the fixed table :data:`LAYERS` of
``torch.nn`` layers, an ``nn.Sequential``) and its parameters. The worker builds the model
from that table (on the meta device first, so a spec cannot make it allocate more than
the parameters it was sent), trains it on its own data with the routine shipped in this
module (SGD, or Opacus DP-SGD through :func:`syft_mpc.dp.dp_sgd_fit`), and stores the
model update as one flat vector under the id the driver chose. The driver then shares
that vector (``ptr.fix_prec().share(...)``) or fetches it: the data never moves.

Both message types are registered with :func:`syft_mpc.remote.workers.register_handler`
(``syft_mpc.remote.workers`` imports this module), so a socket worker process handles them too.

The update vector of one worker ``k`` with ``n_k`` samples, start parameters ``w`` and
trained parameters ``w_k`` is ``c_k * clip(w_k - w)`` followed, when ``report_loss``, by
``c_k * loss_k``: ``c_k = n_k`` (``weighted``, FedAvg's weights, McMahan et al. 2017) or
1; ``clip`` scales to L2 norm ``<= clip_norm`` when it is positive (DP-FedAvg, McMahan
et al. 2018). Summing these vectors over workers gives the weighted update and loss the
server needs (it knows the weights: sample counts are visible in the pointers' shapes),
so secure aggregation reveals only sums (Bonawitz et al. 2017).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from syft_mpc.errors import SerializationError, UnsupportedModelError

if TYPE_CHECKING:
    pass

__all__ = [
    "LAYERS",
    "LOSSES",
    "batch_schedule",
    "build_model",
    "local_sgd",
    "model_spec",
]

MAX_INT_ARG = 1 << 24
MAX_LAYERS = 256

LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "cross_entropy": F.cross_entropy,
    "nll": F.nll_loss,
    "mse": F.mse_loss,
}
"""Loss name -> function, for local training (the same on the driver and the workers)."""


# ---------------------------------------------------------------------------- the layer table
# name -> (class, {argument: kind}); kinds: "int", "dim" (may be negative), "ints" (int or
# a list of up to 3 ints), "bool", "float". Only these classes and arguments ever get built.

_Kinds = dict[str, str]
LAYERS: dict[str, tuple[type[nn.Module], _Kinds]] = {
    "Linear": (nn.Linear, {"in_features": "int", "out_features": "int", "bias": "bool"}),
    "Conv2d": (
        nn.Conv2d,
        {"in_channels": "int", "out_channels": "int", "kernel_size": "ints", "stride": "ints", "padding": "ints", "bias": "bool"},
    ),
    "ReLU": (nn.ReLU, {}),
    "Tanh": (nn.Tanh, {}),
    "Sigmoid": (nn.Sigmoid, {}),
    "Identity": (nn.Identity, {}),
    "LeakyReLU": (nn.LeakyReLU, {"negative_slope": "float"}),
    "Flatten": (nn.Flatten, {"start_dim": "dim", "end_dim": "dim"}),
    "MaxPool2d": (nn.MaxPool2d, {"kernel_size": "ints", "stride": "ints", "padding": "ints"}),
    "AvgPool2d": (nn.AvgPool2d, {"kernel_size": "ints", "stride": "ints", "padding": "ints"}),
    "Dropout": (nn.Dropout, {"p": "float"}),
    "LogSoftmax": (nn.LogSoftmax, {"dim": "dim"}),
    "Softmax": (nn.Softmax, {"dim": "dim"}),
    "GroupNorm": (nn.GroupNorm, {"num_groups": "int", "num_channels": "int", "eps": "float", "affine": "bool"}),
}
_WITH_PARAMS = {"Linear", "Conv2d", "GroupNorm"}  # accept dtype=


def _pair(v: Any) -> tuple[int, int]:
    if type(v) is int:
        return v, v
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def _param_shapes(name: str, a: dict[str, Any]) -> list[tuple[int, ...]]:
    """The parameter shapes a layer will have, computed from its arguments (nothing allocated)."""
    if name == "Linear":
        out: list[tuple[int, ...]] = [(a["out_features"], a["in_features"])]
        return out + [(a["out_features"],)] if a.get("bias", True) else out
    if name == "Conv2d":
        out = [(a["out_channels"], a["in_channels"], *_pair(a["kernel_size"]))]
        return out + [(a["out_channels"],)] if a.get("bias", True) else out
    if name == "GroupNorm":
        return [(a["num_channels"],), (a["num_channels"],)] if a.get("affine", True) else []
    return []


def _ints(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _layer_args(m: nn.Module) -> "tuple[str, dict[str, Any]]":
    """The table entry of one layer, or UnsupportedModelError saying what is not supported."""
    t = type(m)
    name = next((n for n, (cls, _) in LAYERS.items() if cls is t), None)
    if name is None:
        raise UnsupportedModelError(
            f"layer {t.__name__} is not in the worker-side layer table ({', '.join(LAYERS)})"
        )
    if isinstance(m, nn.Linear):
        return name, {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}
    if isinstance(m, nn.Conv2d):
        if m.dilation != (1, 1) or m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise UnsupportedModelError("Conv2d with dilation, groups, a padding mode or string padding is not supported")
        return name, {
            "in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": _ints(m.kernel_size),
            "stride": _ints(m.stride), "padding": _ints(m.padding), "bias": m.bias is not None,
        }
    if isinstance(m, nn.LeakyReLU):
        return name, {"negative_slope": float(m.negative_slope)}
    if isinstance(m, nn.Flatten):
        return name, {"start_dim": m.start_dim, "end_dim": m.end_dim}
    if isinstance(m, nn.MaxPool2d):
        if m.dilation not in (1, (1, 1)) or m.ceil_mode or m.return_indices:
            raise UnsupportedModelError("MaxPool2d with dilation, ceil_mode or return_indices is not supported")
        return name, {"kernel_size": _ints(m.kernel_size), "stride": _ints(m.stride), "padding": _ints(m.padding)}
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
            raise UnsupportedModelError("AvgPool2d with ceil_mode, count_include_pad=False or divisor_override is not supported")
        return name, {"kernel_size": _ints(m.kernel_size), "stride": _ints(m.stride), "padding": _ints(m.padding)}
    if isinstance(m, nn.Dropout):
        return name, {"p": float(m.p)}
    if isinstance(m, (nn.LogSoftmax, nn.Softmax)):
        if m.dim is None:
            raise UnsupportedModelError(f"{t.__name__} needs an explicit dim")
        return name, {"dim": m.dim}
    if isinstance(m, nn.GroupNorm):
        return name, {"num_groups": m.num_groups, "num_channels": m.num_channels, "eps": float(m.eps), "affine": m.affine}
    return name, {}


def model_spec(model: nn.Module) -> list[list[Any]]:
    """``model`` (an ``nn.Sequential`` of :data:`LAYERS`, possibly nested) as a spec a worker can build.

    Raises :class:`UnsupportedModelError` (a ValueError) for anything else: another
    module class (its ``forward`` is code, which never travels), a subclass of a listed
    layer, buffers (BatchNorm), or unsupported layer options.
    """
    if type(model) is not nn.Sequential:
        raise UnsupportedModelError(
            f"the model is a {type(model).__name__}; worker-side training needs an nn.Sequential of "
            f"{', '.join(LAYERS)} (other models train through pointers: local_training='pointers')"
        )
    spec: list[list[Any]] = []
    for m in model.children():
        if type(m) is nn.Sequential:
            spec.extend(model_spec(m))
            continue
        if any(True for _ in m.buffers()):
            raise UnsupportedModelError(f"layer {type(m).__name__} has buffers, which worker-side training does not carry")
        name, args = _layer_args(m)
        spec.append([name, args])
    return spec


def _check_arg(layer: str, key: str, kind: str, v: Any) -> None:
    ok: bool
    if kind == "bool":
        ok = type(v) is bool
    elif kind == "float":
        ok = type(v) in (float, int) and math.isfinite(v) and abs(v) <= MAX_INT_ARG
    elif kind == "int":
        ok = type(v) is int and 0 <= v <= MAX_INT_ARG
    elif kind == "dim":
        ok = type(v) is int and -8 <= v <= 8
    else:  # ints
        ok = (type(v) is int and 0 <= v <= MAX_INT_ARG) or (
            type(v) in (list, tuple) and 1 <= len(v) <= 3 and all(type(x) is int and 0 <= x <= MAX_INT_ARG for x in v)
        )
    if not ok:
        raise SerializationError(f"layer {layer}: bad value {v!r} for argument {key!r}")


def build_model(spec: list[Any], params: list[torch.Tensor]) -> nn.Sequential:
    """Builds the ``nn.Sequential`` described by ``spec`` and loads ``params`` into it.

    Only :data:`LAYERS` with their listed arguments are built, and only once the
    parameter shapes computed from the spec match ``params`` (so a spec cannot make a
    worker allocate more than the parameters it was sent). Raises SerializationError
    (bad spec) or ValueError (shape mismatch).
    """
    if type(spec) is not list or not 1 <= len(spec) <= MAX_LAYERS:
        raise SerializationError(f"a model spec is a list of 1 to {MAX_LAYERS} layers")
    dtype = params[0].dtype if params else torch.float32
    if dtype not in (torch.float32, torch.float64) or any(p.dtype != dtype for p in params):
        raise ValueError("model parameters must all be float32 or all float64")
    checked: list[tuple[type[nn.Module], dict[str, Any]]] = []
    shapes: list[tuple[int, ...]] = []
    for entry in spec:
        if type(entry) not in (list, tuple) or len(entry) != 2 or type(entry[0]) is not str or type(entry[1]) is not dict:
            raise SerializationError("each layer of a model spec is [name, {argument: value}]")
        name, args = entry
        row = LAYERS.get(name)
        if row is None:
            raise SerializationError(f"layer {name!r} is not in the worker-side layer table")
        cls, kinds = row
        for k, v in args.items():
            kind = kinds.get(k)
            if kind is None:
                raise SerializationError(f"layer {name}: unknown argument {k!r}")
            _check_arg(name, k, kind, v)
        kw: dict[str, Any] = {k: tuple(v) if type(v) is list else v for k, v in args.items()}
        shapes += _param_shapes(name, kw)
        if name in _WITH_PARAMS:
            kw["dtype"] = dtype
        checked.append((cls, kw))
    got = [tuple(p.shape) for p in params]
    if shapes != got:
        raise ValueError(f"the model spec has parameters of shapes {shapes} but {got} were sent")
    model = nn.Sequential(*(cls(**kw) for cls, kw in checked))
    if [tuple(p.shape) for p in model.parameters()] != got:  # (cannot happen: same table)
        raise ValueError("the built model does not match the parameters sent")
    with torch.no_grad():
        for p, v in zip(model.parameters(), params):
            p.copy_(v)
    return model


# ---------------------------------------------------------------------------- local training


def batch_schedule(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """The sample indices of each of ``steps`` local SGD steps: epochs of a seeded random
    permutation, cut in batches of ``min(batch_size, n)`` (an epoch's incomplete tail is
    skipped). The driver (pointer training) and a worker (:class:`LocalTrain`) compute the
    same schedule from the same seed."""
    g = torch.Generator().manual_seed(seed)
    bs = min(batch_size, n)
    out: list[list[int]] = []
    perm: list[int] = []
    pos = 0
    for _ in range(steps):
        if pos + bs > len(perm):
            perm = torch.randperm(n, generator=g).tolist()
            pos = 0
        out.append(perm[pos : pos + bs])
        pos += bs
    return out


def local_sgd(
    model: nn.Module, data: torch.Tensor, targets: torch.Tensor, schedule: list[list[int]], lr: float, momentum: float, loss: str
) -> float:
    """Trains ``model`` in place with SGD over ``schedule``; returns the mean training loss.

    The update is ``torch.optim.SGD``'s (momentum buffer started at the first gradient,
    no dampening), written out: the same arithmetic, without the seconds a worker process
    spends importing ``torch._dynamo`` on an optimizer's first step."""
    loss_fn = LOSSES[loss]
    params = list(model.parameters())
    bufs: list["torch.Tensor | None"] = [None] * len(params)
    model.train()
    total = 0.0
    for idx in schedule:
        for p in params:
            p.grad = None
        out = loss_fn(model(data[idx]), targets[idx])
        out.backward()  # type: ignore[no-untyped-call]
        with torch.no_grad():
            for i, p in enumerate(params):
                d = p.grad
                if d is None:
                    continue
                if momentum:
                    b = bufs[i]
                    if b is None:
                        b = bufs[i] = torch.clone(d).detach()
                    else:
                        b.mul_(momentum).add_(d)
                    d = b
                p.add_(d, alpha=-lr)
        total += float(out.detach())
    return total / max(1, len(schedule))


