"""Central differential privacy for federated averaging (DP-FedAvg, McMahan et al. 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

from syft_mpc.dp.common import (
    check_accountant_name,
    check_delta,
    check_epsilon,
    check_positive,
    check_positive_int,
    check_sample_rate,
    make_accountant,
    require_opacus,
)


class FedAvgPrivacy:
    """Noise calibration and accounting for DP federated averaging.

    Each round, every participating client's update is clipped to L2 norm
    ``clip_norm`` (:func:`~syft_mpc.dp.clip_update`), the clipped updates are summed
    (in the clear, or under secure aggregation), and Gaussian noise of standard
    deviation :attr:`noise_std` is added to the **sum** once. Adding or removing one
    client changes the sum by at most ``clip_norm``, so each round is a sampled
    Gaussian mechanism with noise multiplier ``noise_std / clip_norm``, and the
    rounds compose under Rényi DP (Mironov 2017) exactly as DP-SGD steps do (Abadi et
    al. 2016) with clients in place of examples.

    The noise multiplier is calibrated with Opacus
    (``opacus.accountants.utils.get_noise_multiplier``) so that after ``rounds``
    rounds at client sampling rate ``sample_rate`` the guarantee is
    (``target_epsilon``, ``target_delta``)-DP at the client level. The sampling
    amplification assumes each client joins a round independently with probability
    ``sample_rate`` (Poisson sampling) and that who took part stays hidden; with every
    client in every round use ``sample_rate=1``.

    To average, divide the noisy sum by a denominator that does not depend on the
    data: the (expected) number of clients ``n``; the noise on the average then has
    standard deviation ``noise_std / n``. Dividing by the realised count of a Poisson
    sample would leak that count.

    >>> priv = FedAvgPrivacy(target_epsilon=2.0, target_delta=1e-5, clip_norm=1.0,
    ...                      sample_rate=0.1, rounds=50)
    >>> round(priv.noise_std / priv.noise_multiplier, 6)
    1.0
    >>> for _ in range(50):
    ...     priv.step()
    >>> 1.98 <= priv.epsilon() <= 2.0
    True
    """

    def __init__(
        self,
        target_epsilon: float,
        target_delta: float,
        clip_norm: float,
        sample_rate: float,
        rounds: int,
        accountant: str = "rdp",
    ) -> None:
        # Validate everything before Opacus is even imported: bad input fails fast.
        self.target_epsilon = check_epsilon(target_epsilon, "target_epsilon")
        self.target_delta = check_delta(target_delta, "target_delta")
        self.clip_norm = check_positive(clip_norm, "clip_norm")
        self.sample_rate = check_sample_rate(sample_rate)
        self.rounds = check_positive_int(rounds, "rounds")
        self.accountant_name = check_accountant_name(accountant)
        require_opacus()
        from opacus.accountants.utils import get_noise_multiplier  # type: ignore[import-untyped]

        try:
            sigma = get_noise_multiplier(
                target_epsilon=self.target_epsilon,
                target_delta=self.target_delta,
                sample_rate=self.sample_rate,
                steps=self.rounds,
                accountant=self.accountant_name,
            )
        except ValueError as e:
            raise ValueError(
                f"cannot reach epsilon={self.target_epsilon} at delta={self.target_delta} over "
                f"{self.rounds} rounds at sample_rate={self.sample_rate}: {e} "
                "(raise target_epsilon, or lower rounds or sample_rate)"
            ) from e
        self.noise_multiplier: float = float(sigma)
        self.accountant: Any = make_accountant(self.accountant_name)
        self.rounds_done: int = 0

    @property
    def noise_std(self) -> float:
        """Standard deviation of the Gaussian noise to add to the SUM of clipped updates."""
        return self.noise_multiplier * self.clip_norm

    def step(self) -> None:
        """Accounts one round (call it once per aggregated, noised round).

        Raises RuntimeError past ``rounds``: further rounds would exceed the target
        budget the noise was calibrated for.
        """
        if self.rounds_done >= self.rounds:
            raise RuntimeError(
                f"all {self.rounds} rounds planned for epsilon={self.target_epsilon} are spent; "
                "another round would exceed the privacy budget (create a new FedAvgPrivacy with more rounds)"
            )
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.rounds_done += 1

    def epsilon(self) -> float:
        """ε spent so far at ``target_delta`` (0.0 before the first round)."""
        if self.rounds_done == 0:
            return 0.0
        return float(self.accountant.get_epsilon(delta=self.target_delta))

    def add_noise(
        self, summed: Sequence[torch.Tensor], *, generator: Optional[torch.Generator] = None
    ) -> list[torch.Tensor]:
        """Returns ``summed`` plus independent N(0, noise_std²) noise on every coordinate.

        ``summed`` is the sum of the clipped updates of one round. Noise is drawn in
        float64 and added before casting back to each tensor's dtype.
        """
        out = []
        for i, t in enumerate(summed):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise TypeError(f"summed[{i}] must be a floating-point torch.Tensor")
            noise = torch.randn(t.shape, dtype=torch.float64, device=t.device, generator=generator)
            out.append((t.detach().to(torch.float64) + noise * self.noise_std).to(t.dtype))
        return out

    def __repr__(self) -> str:
        return (
            f"FedAvgPrivacy(target_epsilon={self.target_epsilon}, target_delta={self.target_delta}, "
            f"clip_norm={self.clip_norm}, sample_rate={self.sample_rate}, rounds={self.rounds}, "
            f"noise_multiplier={self.noise_multiplier:.4f}, rounds_done={self.rounds_done})"
        )
