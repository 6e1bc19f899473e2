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
nelement new_empty new_full new_ones new_tensor new_zeros nonzero norm normal_ numel outer permute pow
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
cos cosh cross cummax cummin cumprod cumsum diag diagonal diff div divide dot dstack einsum eq equal
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


def _add(name: str, fn: Callable[..., Any]) -> None:
    OPS[name] = fn
    _NAMES.setdefault(fn, name)


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
