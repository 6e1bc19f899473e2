"""Recurrent layers on shared tensors against plaintext torch (``encrypted/recurrent.py``):
LSTM, GRU and RNN forward and backward (1–2 layers, batch_first either way, bidirectional,
given initial states), an LSTM classifier's logits, and training through Conv1d + LSTM with
``torch.optim``; 2 and 3 parties."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

from conftest import SharingGroups, plain

import syft_mpc as sy
from syft_mpc.errors import UnsupportedOperationError

hook = sy.TorchHook(torch)
_groups = SharingGroups(hook, "rnn")
_workers = _groups.workers



def _enc(n: int, t: torch.Tensor, requires_grad: bool = False) -> Any:
    return _groups.enc(n, t, requires_grad)


_plain = plain


RNNS: dict[str, Callable[[], nn.Module]] = {
    "lstm": lambda: nn.LSTM(4, 5),
    "lstm_2_layers_batch_first": lambda: nn.LSTM(4, 5, num_layers=2, batch_first=True),
    "lstm_bidirectional_no_bias": lambda: nn.LSTM(4, 3, bidirectional=True, bias=False),
    "gru_2_layers": lambda: nn.GRU(4, 5, num_layers=2),
    "gru_batch_first": lambda: nn.GRU(4, 3, batch_first=True),
    "rnn_tanh": lambda: nn.RNN(4, 5),
}


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("name", sorted(RNNS))
def test_recurrent_forward_and_backward_match_plaintext(name: str, n: int) -> None:
    torch.manual_seed(sorted(RNNS).index(name))
    plain = RNNS[name]()
    x = torch.randn(3, 2, 4) * 1.5
    xg = x.clone().requires_grad_(True)
    y, hid = plain(xg)
    h_last = hid[0] if isinstance(hid, tuple) else hid
    r, rh = torch.randn(y.shape), torch.randn(h_last.shape)
    ((y * r).sum() + (h_last * rh).sum()).backward()
    ps, james = _workers(n)
    model = copy.deepcopy(plain)
    model.zero_grad()
    model.fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    sx = _enc(n, x, requires_grad=True)
    sy_, shid = model(sx)
    sh_last = shid[0] if isinstance(shid, tuple) else shid
    torch.testing.assert_close(sy_.decrypt(), y.detach(), atol=3e-3, rtol=0)
    torch.testing.assert_close(sh_last.decrypt(), h_last.detach(), atol=3e-3, rtol=0)
    if isinstance(shid, tuple):  # the LSTM's cell state
        torch.testing.assert_close(shid[1].decrypt(), hid[1].detach(), atol=3e-3, rtol=0)
    ((sy_ * r).sum() + (sh_last * rh).sum()).backward()
    torch.testing.assert_close(_plain(sx.grad), xg.grad, atol=5e-3, rtol=0)
    # weight gradients sum T·B terms, each carrying sigmoid/tanh's error (≤ 7.3e-4) times |x| ≤ ~5:
    # measured up to 8.8e-3 (Elman RNN, 3 random draws), so 1e-2 plus 1 % of the gradient
    for (pname, p), q in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(_plain(p.grad), q.grad, atol=1e-2, rtol=1e-2, msg=pname)


@pytest.mark.parametrize("n", [2, 3])
def test_lstm_with_shared_initial_state(n: int) -> None:
    torch.manual_seed(11)
    plain = nn.LSTM(3, 4, batch_first=True)
    x, h0, c0 = torch.randn(2, 5, 3), torch.randn(1, 2, 4) * 0.5, torch.randn(1, 2, 4) * 0.5
    hg, cg = h0.clone().requires_grad_(True), c0.clone().requires_grad_(True)
    y, _ = plain(x, (hg, cg))
    y.sum().backward()
    ps, james = _workers(n)
    model = copy.deepcopy(plain).fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    sh, sc = _enc(n, h0, True), _enc(n, c0, True)
    sy_, _ = model(_enc(n, x), (sh, sc))
    torch.testing.assert_close(sy_.decrypt(), y.detach(), atol=3e-3, rtol=0)
    sy_.sum().backward()
    torch.testing.assert_close(_plain(sh.grad), hg.grad, atol=5e-3, rtol=0)
    torch.testing.assert_close(_plain(sc.grad), cg.grad, atol=5e-3, rtol=0)


class LSTMClassifier(nn.Module):
    """A sequence classifier as users write it: LSTM, last hidden state, linear head."""

    def __init__(self, features: int = 8, hidden: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, (h, _) = self.lstm(x)
        return self.head(h[-1])


@pytest.mark.parametrize("n", [2, 3])
def test_lstm_classifier_logits_match_plaintext(n: int) -> None:
    """Encrypted logits within 1 % of the plaintext logits' scale, with the same argmax."""
    torch.manual_seed(12)
    model = LSTMClassifier().eval()
    x = torch.randn(4, 8, 8)  # 4 sequences of 8 rows of 8 features (digits-shaped)
    with torch.no_grad():
        ref = model(x)
    ps, james = _workers(n)
    enc_model = copy.deepcopy(model).fix_precision().share(*ps, crypto_provider=james)
    with torch.no_grad():
        out = enc_model(_enc(n, x)).decrypt()
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() <= 0.01 * scale, ((out - ref).abs().max().item(), scale)
    assert torch.equal(out.argmax(1), ref.argmax(1))


class ConvLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 6, 3, padding=1)
        self.lstm = nn.LSTM(6, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.relu(self.conv(x)).transpose(1, 2)  # (N, L, C)
        out, _ = self.lstm(z)
        return self.head(out[:, -1])


def test_conv1d_lstm_training_tracks_plaintext_loss() -> None:
    """4 SGD steps through Conv1d, ReLU, LSTM and a linear head: the encrypted loss stays within
    0.05 of the plaintext one at every step."""
    torch.manual_seed(13)
    model = ConvLSTM()
    plain = copy.deepcopy(model)
    x = torch.randn(6, 3, 7)
    y = torch.randint(0, 3, (6,))
    ps, james = _workers(2)
    popt = optim.SGD(plain.parameters(), lr=0.5, momentum=0.5)
    model.fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.5).fix_precision()
    sx = _enc(2, x)
    target = F.one_hot(y, 3).float().fix_prec().share(*ps, crypto_provider=james)
    losses, plosses = [], []
    for _ in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(sx), target)
        loss.backward()
        opt.step()
        losses.append(loss.decrypt().item())
        popt.zero_grad()
        pl = F.cross_entropy(plain(x), y)
        pl.backward()
        popt.step()
        plosses.append(pl.item())
    assert plosses[-1] < plosses[0]
    assert max(abs(a - b) for a, b in zip(losses, plosses)) < 0.05, (losses, plosses)


def test_packed_sequences_are_refused_with_a_reason() -> None:
    ps, james = _workers(2)
    model = nn.LSTM(2, 3).fix_precision().share(*ps, crypto_provider=james)
    with pytest.raises(UnsupportedOperationError, match="packed sequences"):
        model(nn.utils.rnn.pack_padded_sequence(_enc(2, torch.randn(4, 2, 2)), [4, 2]))


def test_validation_mode_runs_lstm_gru_and_dropout_without_false_alarms() -> None:
    """Validation mode replays every op it can in plaintext; the LSTM layer (its workspace is
    not torch's) and dropout's random mask are left out, everything around them is checked."""
    torch.manual_seed(14)
    ps, james = _workers(2)
    lstm = nn.LSTM(3, 4, batch_first=True).fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    gru = nn.GRU(4, 4, batch_first=True).fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    x = _enc(2, torch.randn(2, 5, 3))
    with sy.validation():
        out, _ = lstm(x)
        out, _ = gru(F.dropout(out, 0.2, True))
        out.sum().backward()
    assert isinstance(lstm.weight_ih_l0.grad, sy.SharedTensor)
