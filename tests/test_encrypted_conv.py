"""Convolutions (1-d, grouped, dilated, transposed), adaptive average pooling, padding, nearest
upsampling and cumsum on shared tensors against plaintext torch: forward and backward, shared or
public weights, 2 and 3 parties (``encrypted/nn_ops.py``, docs/ENCRYPTED_TENSORS.md)."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SharingGroups, plain

import syft_mpc as sy
from syft_mpc.errors import UnsupportedOperationError

hook = sy.TorchHook(torch)
_groups = SharingGroups(hook, "conv")
_workers = _groups.workers



def _enc(n: int, t: torch.Tensor, requires_grad: bool = False) -> Any:
    return _groups.enc(n, t, requires_grad)


_plain = plain


MODULES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=1), (2, 3, 9)),
    "conv1d_stride_dilation_groups": (lambda: nn.Conv1d(4, 6, 3, stride=2, dilation=2, groups=2, padding=2), (2, 4, 11)),
    "conv1d_same": (lambda: nn.Conv1d(2, 3, 4, padding="same", bias=False), (1, 2, 7)),
    "conv2d_depthwise": (lambda: nn.Conv2d(4, 4, 3, groups=4, padding=1), (2, 4, 5, 5)),
    "conv2d_dilated": (lambda: nn.Conv2d(2, 3, 3, dilation=2, padding=2, stride=2), (1, 2, 7, 8)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1), (2, 3, 4, 3)),
    "conv_transpose2d_groups_dilation": (lambda: nn.ConvTranspose2d(4, 6, (2, 3), stride=(1, 2), dilation=(2, 1), groups=2), (1, 4, 3, 4)),
    "conv_transpose2d_big_padding": (lambda: nn.ConvTranspose2d(2, 2, 3, stride=3, padding=2), (1, 2, 4, 4)),
    "conv_transpose1d": (lambda: nn.ConvTranspose1d(2, 3, 4, stride=2, padding=1), (2, 2, 5)),
    "adaptive_avg_pool2d": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 5, 7)),
    "adaptive_avg_pool2d_1": (lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 4, 4)),
    "adaptive_max_pool2d_global": (lambda: nn.AdaptiveMaxPool2d(1), (2, 3, 4, 4)),
    "adaptive_max_pool2d_2x3": (lambda: nn.AdaptiveMaxPool2d((2, 3)), (1, 2, 4, 6)),
    "upsample_nearest2d": (lambda: nn.Upsample(scale_factor=2, mode="nearest"), (1, 2, 3, 4)),
    "upsample_nearest2d_size": (lambda: nn.Upsample(size=(5, 7), mode="nearest"), (1, 2, 3, 4)),
    "upsample_nearest1d": (lambda: nn.Upsample(scale_factor=3, mode="nearest"), (1, 2, 4)),
    "upsample_nearest_exact2d": (lambda: nn.Upsample(scale_factor=(2, 3), mode="nearest-exact"), (1, 2, 3, 4)),
    "upsample_bilinear2d": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), (1, 2, 3, 4)),
    "upsample_bilinear2d_align_corners_size": (lambda: nn.Upsample(size=(5, 7), mode="bilinear", align_corners=True), (2, 1, 3, 4)),
    "upsample_linear1d": (lambda: nn.Upsample(scale_factor=2.5, mode="linear"), (1, 2, 4)),
    "pixel_shuffle": (lambda: nn.PixelShuffle(2), (1, 8, 2, 3)),
    "pixel_unshuffle": (lambda: nn.PixelUnshuffle(2), (1, 2, 4, 6)),
    "zero_pad2d": (lambda: nn.ZeroPad2d((1, 2, 0, 1)), (1, 2, 3, 3)),
    "constant_pad1d": (lambda: nn.ConstantPad1d((2, 1), -1.5), (2, 3, 4)),
    "reflection_pad2d": (lambda: nn.ReflectionPad2d((1, 2, 2, 1)), (1, 2, 4, 4)),
    "reflection_pad1d": (lambda: nn.ReflectionPad1d(2), (2, 3, 5)),
    "replication_pad2d": (lambda: nn.ReplicationPad2d((2, 0, 1, 3)), (1, 2, 3, 4)),
}


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_layer_forward_and_backward_match_plaintext(name: str, n: int) -> None:
    make, shape = MODULES[name]
    torch.manual_seed(sorted(MODULES).index(name))
    plain = make()
    x = torch.randn(shape)
    xg = x.clone().requires_grad_(True)
    out = plain(xg)
    r = torch.randn(out.shape)  # a random output gradient
    (out * r).sum().backward()
    ps, james = _workers(n)
    model = copy.deepcopy(plain)
    model.zero_grad()
    model.fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    sx = _enc(n, x, requires_grad=True)
    sout = model(sx)
    assert isinstance(sout, sy.SharedTensor) and sout.shape == out.shape
    torch.testing.assert_close(sout.decrypt(), out.detach(), atol=2e-3, rtol=0)
    (sout * _enc(n, r)).sum().backward()  # a shared output gradient, as a shared loss gives
    assert isinstance(sx.grad, sy.SharedTensor)
    torch.testing.assert_close(sx.grad.decrypt(), xg.grad, atol=5e-3, rtol=0)
    for (pname, p), q in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(_plain(p.grad), q.grad, atol=5e-3, rtol=0, msg=pname)


@pytest.mark.parametrize("transposed", [False, True])
def test_public_weights_with_shared_input(transposed: bool) -> None:
    """A public model on a shared input (the data owner's private image, the model in the clear)."""
    torch.manual_seed(5)
    conv = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1) if transposed else nn.Conv2d(3, 2, 3, stride=2, dilation=2, padding=1)
    x = torch.randn(1, 3, 6, 6)
    sx = _enc(2, x, requires_grad=True)
    out = conv(sx)
    torch.testing.assert_close(out.decrypt(), conv(x).detach(), atol=2e-3, rtol=0)
    out.sum().backward()
    xg = x.clone().requires_grad_(True)
    conv(xg).sum().backward()
    torch.testing.assert_close(_plain(sx.grad), xg.grad, atol=5e-3, rtol=0)


def test_shared_weights_with_public_input() -> None:
    torch.manual_seed(6)
    plain = nn.ConvTranspose2d(2, 3, 2, stride=2)
    x = torch.randn(2, 2, 3, 3)
    ps, james = _workers(2)
    model = copy.deepcopy(plain).fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    out = model(x)
    torch.testing.assert_close(out.decrypt(), plain(x).detach(), atol=2e-3, rtol=0)
    out.sum().backward()
    plain(x).sum().backward()
    torch.testing.assert_close(_plain(model.weight.grad), plain.weight.grad, atol=5e-3, rtol=0)


@pytest.mark.parametrize("n", [2, 3])
def test_cumsum_is_exact_forward_and_backward(n: int) -> None:
    torch.manual_seed(7)
    x = torch.randn(3, 5, 4)
    for dim in (0, 1, -1):
        sx = _enc(n, x, requires_grad=True)
        out = torch.cumsum(sx, dim)
        torch.testing.assert_close(out.decrypt(), torch.cumsum(x, dim), atol=1e-4, rtol=0)
        r = torch.randn(out.shape)
        (out * r).sum().backward()
        xg = x.clone().requires_grad_(True)
        (torch.cumsum(xg, dim) * r).sum().backward()
        torch.testing.assert_close(_plain(sx.grad), xg.grad, atol=2e-4, rtol=0)


def test_bad_padding_and_3d_convolution_say_what_is_wrong() -> None:
    sx = _enc(2, torch.randn(1, 1, 3, 3))
    with pytest.raises(ValueError, match="reflection padding"):
        F.pad(sx, (3, 3, 0, 0), mode="reflect")
    with pytest.raises(UnsupportedOperationError, match="divide the input"):
        F.adaptive_max_pool2d(sx, 2)
    conv3 = nn.Conv3d(1, 1, 1)
    with pytest.raises(UnsupportedOperationError, match="3-d convolution is not supported"):
        conv3(_enc(2, torch.randn(1, 1, 2, 2, 2)))


@pytest.mark.parametrize("n", [2, 3])
def test_dropout_mask_is_shared_drawn_by_the_holders_and_scaled(n: int) -> None:
    """nn.Dropout in training: the mask is a sharing drawn by the holders together (nothing
    public: the noise tensor itself is shared), keeps about 1 − p, scales kept values by
    1/(1 − p), and the backward uses the same mask; eval mode is the identity."""
    torch.manual_seed(8)
    x = torch.randn(60, 50).sign() * (0.5 + torch.rand(60, 50))  # away from 0: a dropped entry reads 0
    sx = _enc(n, x, requires_grad=True)
    drop = nn.Dropout(0.3)
    y = drop(sx)
    assert isinstance(y, sy.SharedTensor)
    yd = y.decrypt()
    keep = yd != 0
    assert 0.65 < keep.float().mean().item() < 0.75  # 3000 draws: 0.7 ± 5σ
    torch.testing.assert_close(yd[keep], x[keep] / 0.7, atol=1e-3, rtol=0)
    y.sum().backward()
    torch.testing.assert_close(_plain(sx.grad), keep.double().float() / 0.7, atol=1e-3, rtol=0)
    masks = [(drop(_enc(n, torch.ones(200))).decrypt() != 0) for _ in range(2)]
    assert not torch.equal(masks[0], masks[1])  # fresh randomness each call
    drop.eval()
    torch.testing.assert_close(drop(sx).decrypt(), x, atol=1e-4, rtol=0)


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_conv_transpose2d_geometry_matches_plaintext(data: st.DataObject) -> None:
    """Hypothesis over transposed-convolution geometry (kernel, stride, padding, output_padding,
    dilation, groups, 1-d or 2-d): forward, input and weight gradients against torch."""
    g = data.draw(st.integers(1, 2), "groups")
    k = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), "kernel")
    s = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), "stride")
    d = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)), "dilation")
    size = (3, 4)
    op = tuple(data.draw(st.integers(0, max(s[i], d[i]) - 1), f"output_padding{i}") for i in range(2))
    # Padding that leaves at least one output row and column: (size - 1) s - 2p + d (k - 1) + op + 1 >= 1.
    p = tuple(
        data.draw(st.integers(0, min(d[i] * (k[i] - 1), ((size[i] - 1) * s[i] + d[i] * (k[i] - 1) + op[i]) // 2)), f"padding{i}")
        for i in range(2)
    )
    n = data.draw(st.sampled_from([2, 3]), "parties")
    conv = nn.ConvTranspose2d(2 * g, 2 * g, k, stride=s, padding=p, output_padding=op, dilation=d, groups=g)
    x = torch.randn(1, 2 * g, *size)
    xg = x.clone().requires_grad_(True)
    out = conv(xg)
    r = torch.randn(out.shape)
    (out * r).sum().backward()
    ps, james = _workers(n)
    enc = copy.deepcopy(conv)
    enc.zero_grad()
    enc.fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    sx = _enc(n, x, requires_grad=True)
    sout = enc(sx)
    torch.testing.assert_close(sout.decrypt(), out.detach(), atol=2e-3, rtol=0)
    (sout * r).sum().backward()
    torch.testing.assert_close(_plain(sx.grad), xg.grad, atol=5e-3, rtol=0)
    torch.testing.assert_close(_plain(enc.weight.grad), conv.weight.grad, atol=5e-3, rtol=0)


def test_writing_into_a_view_of_a_shared_tensor_writes_through() -> None:
    """``x[0] += 1`` and ``buf[1:].copy_(y)`` change the viewed tensor, including the shared buffer
    ``empty_like`` now gives (they used to be refused; before that, lost silently). More in
    test_encrypted_views.py."""
    x = _enc(2, torch.tensor([1.0, 2.0, 3.0]))
    x[0] += 1
    buf = torch.empty_like(x)
    buf[1:].copy_(x[:2])
    torch.testing.assert_close(x.decrypt(), torch.tensor([2.0, 2.0, 3.0]))
    torch.testing.assert_close(buf.decrypt(), torch.tensor([0.0, 2.0, 2.0]))
