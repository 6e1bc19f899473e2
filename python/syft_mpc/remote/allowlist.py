"""The operations a worker will run for a peer: an explicit table from wire name to callable.

A worker never imports a module or looks up an attribute by a name it received:
the names below are fixed in this file, resolved once at import, and a remote call
is a lookup in :data:`OPS`. Wire names are ``torch.<fn>`` (functions in ``torch``),
``F.<fn>`` (``torch.nn.functional``), ``Tensor.<method>`` (tensor methods), and
``op.<name>`` (Python operators such as ``op.getitem`` for ``x[i]``; no dunder
name ever travels). Methods that reveal data (``item``, ``tolist``, ``numpy``) are
not listed: data comes back only through ``.get()``.

    >>> import torch
    >>> from syft_mpc.remote import allowlist
    >>> allowlist.OPS["torch.add"] is torch.add
    True
    >>> allowlist.name_of(torch.Tensor.sum)
    'Tensor.sum'
    >>> "Tensor.__reduce_ex__" in allowlist.OPS
    False
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

_TENSOR_METHODS = """
abs abs_ acos add add_ addbmm addcdiv addcdiv_ addcmul addcmul_ addmm addmv all allclose amax amin any
argmax argmin argsort asin atan atan2 backward baddbmm bernoulli bernoulli_ bfloat16 bitwise_and
bitwise_not bitwise_or bitwise_xor bmm bool byte ceil ceil_ char chunk clamp clamp_ clamp_max clamp_min
clip clip_ clone contiguous copy_ cos cos_ cosh count_nonzero cpu cross cummax cummin cumprod cumsum
deg2rad detach detach_ diag diag_embed diagonal diff dim div div_ divide dot double eq eq_ equal erf
exp exp_ expand expand_as expm1 fill_ fill_diagonal_ fix flatten flip fliplr flipud float float_power
floor floor_ floor_divide fmod frac gather ge gelu ger gt half hardshrink index_add index_add_
index_copy index_fill index_select int inverse is_complex is_contiguous is_floating_point isclose
isfinite isinf isnan kron kthvalue le lerp lerp_ lgamma log log10 log1p log2 log_ log_softmax
logaddexp logical_and logical_not logical_or logical_xor logit logsumexp long lt masked_fill
masked_fill_ masked_scatter masked_select matmul max maximum mean median min minimum mm mode moveaxis
movedim msort mul mul_ multiply mv nan_to_num nanmean nansum narrow ndimension ne neg neg_ negative
nelement new_empty new_empty_strided new_full new_ones new_tensor new_zeros nonzero norm normal_ numel outer permute pow
pow_ prod rad2deg reciprocal reciprocal_ relu relu_ remainder renorm repeat repeat_interleave
requires_grad_ reshape reshape_as retain_grad roll rot90 round round_ rsqrt rsqrt_ scatter scatter_
scatter_add scatter_add_ select short sigmoid sigmoid_ sign sign_ sin sin_ sinh size slice_scatter
softmax sort split sqrt sqrt_ square square_ squeeze squeeze_ std sub sub_ subtract sum sum_to_size
swapaxes t t_ take tan tanh tanh_ tensor_split tile to topk trace transpose transpose_ tril tril_
triu triu_ true_divide trunc type_as unbind unflatten uniform_ unique unsqueeze unsqueeze_ var view
view_as where xlogy zero_
""".split()

_TORCH_FUNCTIONS = """
abs add addcdiv addcmul addmm all allclose amax amin any argmax argmin argsort atan2 baddbmm bmm
broadcast_tensors cat chunk clamp clip clone concat concatenate conv1d conv2d conv3d conv_transpose2d
cos cosh cross cummax cummin cumprod cumsum diag diagonal diff div divide dot dstack einsum empty_like eq equal
erf exp expm1 flatten flip floor floor_divide fmod full_like gather ge gt hstack index_select inner
isclose isfinite isinf isnan kron le lerp log log10 log1p log2 log_softmax logaddexp logical_and
logical_not logical_or logsumexp lt masked_fill masked_select matmul max maximum mean median min
minimum mm mul multiply mv nan_to_num nansum narrow ne neg negative nonzero norm numel ones_like outer
permute pow prod rand_like randint_like randn_like reciprocal relu remainder repeat_interleave reshape
roll round rsqrt rsub select sigmoid sign sin sinh softmax sort split sqrt square squeeze stack std
std_mean sub subtract sum t take tan tanh tensordot tile topk trace transpose tril triu true_divide
trunc unbind unique unsqueeze var var_mean vstack where xlogy zeros_like
""".split()

_FUNCTIONAL = """
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_max_pool2d avg_pool1d avg_pool2d batch_norm
binary_cross_entropy binary_cross_entropy_with_logits celu conv1d conv2d conv_transpose2d
cosine_similarity cross_entropy dropout dropout2d elu embedding gelu glu group_norm hardsigmoid
hardswish hardtanh huber_loss instance_norm kl_div l1_loss layer_norm leaky_relu linear log_softmax
logsigmoid max_pool1d max_pool2d mish mse_loss nll_loss normalize one_hot pad pairwise_distance prelu
relu relu6 rms_norm selu sigmoid silu smooth_l1_loss soft_margin_loss softmax softmin softplus
softsign tanh tanhshrink threshold unfold
""".split()

# Python operators: wire name op.<name> -> the torch.Tensor dunder.
_OPERATORS = """
add radd iadd sub rsub isub mul rmul imul truediv rtruediv itruediv floordiv rfloordiv ifloordiv
mod rmod pow rpow ipow matmul rmatmul neg abs getitem setitem eq ne lt le gt ge and rand iand or
ror ior xor rxor ixor invert lshift rshift
""".split()

OPS: dict[str, Callable[..., Any]] = {}
"""Wire name -> callable. The only operations a worker runs for a peer."""

_NAMES: dict[Any, str] = {}


UNINITIALISED = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"})
"""Factories that hand out uninitialised memory. A worker runs them zero-filled (``zero_filled``),
for a remote call as for a plan: a peer never sees memory the worker used before."""


def zero_filled(op: Callable[..., Any]) -> Callable[..., Any]:
    """``op`` (an uninitialised factory) with its result filled with zeros."""

    def run(*args: Any, **kwargs: Any) -> Any:
        out = op(*args, **kwargs)
        with torch.no_grad():  # new_empty(..., requires_grad=True) gives a leaf
            out.zero_()
        return out

    return run


def _add(name: str, fn: Callable[..., Any]) -> None:
    OPS[name] = zero_filled(fn) if name.rsplit(".", 1)[1] in UNINITIALISED else fn
    _NAMES.setdefault(fn, name)  # the caller names the torch function; the worker runs OPS[name]


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A detached copy that keeps ``requires_grad`` (what ``.copy()`` means for a tensor)."""
    return t.detach().clone().requires_grad_(t.requires_grad)


for _n in _TENSOR_METHODS:
    if hasattr(torch.Tensor, _n):
        _add("Tensor." + _n, getattr(torch.Tensor, _n))
for _n in _TORCH_FUNCTIONS:
    if hasattr(torch, _n):
        _add("torch." + _n, getattr(torch, _n))
for _n in _FUNCTIONAL:
    if hasattr(F, _n):
        _add("F." + _n, getattr(F, _n))
for _n in _OPERATORS:
    _d = f"__{_n}__"
    if hasattr(torch.Tensor, _d):
        _add("op." + _n, getattr(torch.Tensor, _d))
_add("op.copy", _copy)
# Functions torch reports to __torch_function__ under another object than the public one.
for _alias, _target in (("_max_pool2d", "max_pool2d"), ("_max_pool1d", "max_pool1d")):
    if hasattr(F, _alias):
        _NAMES.setdefault(getattr(F, _alias), "F." + _target)


def name_of(func: Any) -> "str | None":
    """The wire name of a torch function or method, or None if it is not allowed."""
    try:
        return _NAMES.get(func)
    except TypeError:  # unhashable callables are never allowed
        return None


def is_method(name: str) -> bool:
    """Whether ``Tensor.<name>`` is allowed (used for ``ptr.<name>(...)``)."""
    return "Tensor." + name in OPS


# ----------------------------------------------------------------------------- plans: aten ops
# A plan (syft_mpc.plans) is a graph traced to torch's aten operators. Its nodes name
# "aten.<op>.<overload>"; a worker runs a node only if that name is in ATEN_OPS. The packets
# below are listed by hand; every overload of a packet is allowed except the ``out=`` forms
# (they write into a caller-chosen tensor). ``as_strided`` is left out (it addresses storage
# directly). Uninitialised factories (empty, empty_like, new_empty, ...: UNINITIALISED), which
# torch's backward formulas emit, run zero-filled, as in a remote call.
_ATEN_PACKETS = """
abs abs_ acos acosh add add_ addbmm addcdiv addcmul addmm addmv alias all amax amin any arange argmax
argmin asin asinh atan atan2 atanh avg_pool2d avg_pool2d_backward baddbmm bernoulli
bitwise_and bitwise_not bitwise_or bitwise_xor bmm cat ceil clamp clamp_max clamp_min clone
constant_pad_nd convolution convolution_backward copy copy_ cos cosh cumsum detach div div_ dot
elu elu_backward embedding embedding_dense_backward empty empty_like eq erf exp exp_ expand expm1
fill fill_ flip floor floor_divide fmod full full_like gather ge gelu gelu_backward gt hardtanh
hardtanh_backward index index_put index_select isnan le leaky_relu leaky_relu_backward lerp
linear log log10 log1p log2 log_sigmoid_backward log_sigmoid_forward logical_and logical_not
logical_or logsumexp lt masked_fill max max_pool2d_with_indices max_pool2d_with_indices_backward
maximum mean min minimum mm mse_loss mse_loss_backward mul mul_ mv native_batch_norm
native_batch_norm_backward native_dropout native_dropout_backward native_group_norm
native_group_norm_backward native_layer_norm native_layer_norm_backward ne neg new_empty new_empty_strided empty_strided
new_full new_ones new_zeros nll_loss_backward nll_loss_forward nll_loss2d_backward
nll_loss2d_forward norm ones ones_like permute pow prod reciprocal relu relu_ remainder repeat
rsqrt rsub scalar_tensor scatter scatter_add select select_backward sigmoid sigmoid_backward sign
silu silu_backward sin sinh slice slice_backward softplus softplus_backward split split_with_sizes
sqrt squeeze stack sub sub_ sum t tanh tanh_backward threshold threshold_backward topk transpose
tril triu unbind unsqueeze var view where zero_ zeros zeros_like _log_softmax logical_or_ logical_and_
masked_fill_ clamp_ neg_ sqrt_ sigmoid_ tanh_ index_add index_add_ index_put_ scatter_ scatter_add_ eq_ ne_
_log_softmax_backward_data _softmax _softmax_backward_data _to_copy _unsafe_view _convolution
""".split()

ATEN_OPS: dict[str, Any] = {}
"""Plan node name (``aten.<op>.<overload>``) -> torch's OpOverload. The only ops a plan may name."""
_ATEN_NAMES: dict[Any, str] = {}

for _n in _ATEN_PACKETS:
    _packet = getattr(torch.ops.aten, _n, None)
    if _packet is None:  # not in this torch: the name is simply not allowed
        continue
    for _ov in _packet.overloads():
        if _ov == "out" or _ov.endswith("_out") or _ov.startswith("out"):
            continue
        _wire = f"aten.{_n}.{_ov}"
        _op = getattr(_packet, _ov)
        ATEN_OPS[_wire] = zero_filled(_op) if _n in UNINITIALISED else _op
        _ATEN_NAMES[_op] = _wire


def aten_name_of(op: Any) -> "str | None":
    """The plan node name of an aten OpOverload (``aten.add.Tensor``), or None if plans may not use it."""
    try:
        return _ATEN_NAMES.get(op)
    except TypeError:
        return None
