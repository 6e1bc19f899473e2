"""Privacy analysis of PATE's noisy-max aggregation (Papernot et al., ICLR 2017).

The teachers' votes on each query are aggregated by report-noisy-max with
Laplace(1/γ) noise (γ = ``noise_eps``). Changing one teacher's training data moves
one vote from a label to another, so each answer is 2γ-DP; the moments accountant
of the paper bounds the log moment generating function α(l) of the privacy loss of
each answer, sums them over answers, and converts to (ε, δ) by
ε = min_l (Σα(l) + ln(1/δ)) / l. The data-dependent bound uses how strongly the
teachers agree on each query; the data-independent bound uses only 2γ-DP.

This follows the reference ``analysis.py`` of the paper and
``syft.frameworks.torch.dp.pate.perform_analysis`` of PySyft 0.2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from syft_mpc.dp.common import check_delta, check_epsilon, check_positive, check_positive_int


def compute_q_noisy_max(counts: npt.ArrayLike, noise_eps: float) -> float:
    """Upper bound on Pr[noisy max ≠ plurality label] for vote ``counts``.

    With Laplace(1/γ) noise, label j beats the winner i* with probability at most
    (2 + g)/(4 e^g) where g = γ·(n_i* − n_j) (paper, Appendix; the bound of
    ``analysis.py``). Capped at 1 − 1/K, the error of a uniformly random answer.
    """
    c = np.asarray(counts, dtype=np.float64)
    winner = int(np.argmax(c))
    gaps = noise_eps * (c[winner] - np.delete(c, winner))
    q = float(np.sum((gaps + 2.0) / (4.0 * np.exp(gaps))))
    return min(q, 1.0 - 1.0 / len(c))


def logmgf_exact(q: float, priv_eps: float, l: int) -> float:
    """Bound on the l-th log moment α(l) of a ``priv_eps``-DP answer that errs w.p. ≤ q.

    The minimum of three valid bounds: ½ε²l(l+1) (pure ε-DP, Bun & Steinke 2016),
    εl (pure ε-DP, trivially), and the data-dependent bound of the paper's Theorem 3,
    log((1−q)((1−q)/(1−e^ε q))^l + q e^{εl}), which the theorem states for
    q < (e^ε − 1)/(e^{2ε} − 1) = 1/(e^ε + 1). At that threshold the bound equals εl
    and grows beyond it, so restricting it to the threshold gives the same minimum
    as ``analysis.py`` (which tests q < 0.5) without its log/division failures.
    """
    eps_l = priv_eps * l
    bounds = [0.5 * priv_eps * priv_eps * l * (l + 1), eps_l]
    if q < 1.0 / (math.exp(priv_eps) + 1.0):
        t = (1.0 - q) * ((1.0 - q) / (1.0 - math.exp(priv_eps) * q)) ** l + q * math.exp(eps_l)
        bounds.append(math.log(t))
    return min(bounds)


def logmgf_from_counts(counts: npt.ArrayLike, noise_eps: float, l: int) -> float:
    """α(l) of one noisy-max answer: 2·noise_eps-DP, data-dependent through ``counts``."""
    return logmgf_exact(compute_q_noisy_max(counts, noise_eps), 2.0 * noise_eps, l)


def _as_int_array(name: str, x: Any) -> npt.NDArray[np.int64]:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
    return a.astype(np.int64)


def perform_analysis(
    teacher_preds: Any,
    indices: Any,
    noise_eps: float,
    delta: float = 1e-5,
    moments: int = 8,
    beta: float = 0.09,
    *,
    num_labels: int | None = None,
) -> tuple[float, float]:
    """(data-dependent ε, data-independent ε) of PATE labels released by noisy max.

    Args:
        teacher_preds: integer labels, shape (num_teachers, num_examples): teacher t's
            vote on query e (numpy array, torch tensor or nested lists).
        indices: the released (noisy-max aggregated) labels, shape (num_examples,).
        noise_eps: γ, the inverse scale of the Laplace noise added to the vote counts.
        delta: the δ of the (ε, δ) guarantee.
        moments: the orders l = 1..moments over which the bound is minimised.
        beta: smoothing parameter of the smooth-sensitivity release of the
            data-dependent ε; accepted for compatibility with PySyft and validated,
            but, as there, it does not change the returned values.
        num_labels: number of classes K; defaults to 1 + the largest label seen.

    Every column of ``teacher_preds`` is one answered query and is accounted with its
    own vote counts. (PySyft 0.2 iterated ``for i in indices: counts[i]``, which reads
    the released labels as row numbers, so its data-dependent ε analysed the first K
    queries only; its tutorial result 1.5266 for 100 unanimous answers among 10 labels
    at noise_eps=0.1 is what this function returns for that input.) The labels in
    ``indices`` do not enter the bound, which depends only on the vote counts.

    >>> import numpy as np
    >>> preds = np.zeros((100, 100), dtype=int)          # 100 teachers agree on all 100 queries
    >>> dep, ind = perform_analysis(preds, np.zeros(100, dtype=int), noise_eps=0.1, num_labels=10)
    >>> round(dep, 6), round(ind, 6)
    (1.526552, 11.756463)
    """
    gamma = check_epsilon(noise_eps, "noise_eps")
    dlt = check_delta(delta)
    n_moments = check_positive_int(moments, "moments")
    check_positive(beta, "beta")
    preds = _as_int_array("teacher_preds", teacher_preds)
    labels = _as_int_array("indices", indices)
    if preds.ndim != 2 or preds.shape[0] < 1 or preds.shape[1] < 1:
        raise ValueError(f"teacher_preds must have shape (num_teachers, num_examples), got {preds.shape}")
    num_examples = preds.shape[1]
    if labels.shape != (num_examples,):
        raise ValueError(
            f"indices must have shape (num_examples,) = ({num_examples},) to match teacher_preds "
            f"{preds.shape}, got {labels.shape}"
        )
    if preds.min() < 0 or labels.min() < 0:
        raise ValueError("labels must be >= 0")
    k = int(max(preds.max(), labels.max())) + 1 if num_labels is None else check_positive_int(num_labels, "num_labels")
    if preds.max() >= k or labels.max() >= k:
        raise ValueError(f"labels must lie in [0, num_labels) = [0, {k})")

    # counts[e, c]: votes for label c on query e.
    counts = np.zeros((num_examples, k), dtype=np.int64)
    np.add.at(counts, (np.broadcast_to(np.arange(num_examples), preds.shape), preds), 1)

    orders = range(1, n_moments + 1)
    log_delta = math.log(dlt)
    total = np.zeros(n_moments)
    for e in range(num_examples):
        q = compute_q_noisy_max(counts[e], gamma)
        total += [logmgf_exact(q, 2.0 * gamma, l) for l in orders]
    data_dep = min((total[i] - log_delta) / l for i, l in enumerate(orders))
    # Data-independent: q = 1 leaves only the pure-DP bounds, the same for every query.
    data_ind = min((num_examples * logmgf_exact(1.0, 2.0 * gamma, l) - log_delta) / l for l in orders)
    # Each query's data-dependent moment is at most its data-independent one, so
    # data_dep <= data_ind; the min only removes the rounding of the long sum.
    return float(min(data_dep, data_ind)), float(data_ind)
