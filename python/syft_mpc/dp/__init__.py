"""Differential privacy for federated and local training, built on Opacus.

* :func:`dp_sgd_fit`: DP-SGD on a worker (Abadi et al. 2016), ε from an Opacus accountant.
* :class:`FedAvgPrivacy` and :func:`clip_update`: central DP for federated averaging
  (McMahan et al. 2018), calibrated and accounted with Opacus (RDP, Mironov 2017).
* :func:`laplace_mechanism`, :func:`gaussian_mechanism`: statistics (Dwork & Roth 2014;
  analytic Gaussian calibration of Balle & Wang 2018).
* :func:`perform_analysis`: the PATE moments accountant (Papernot et al. 2017).

Opacus is optional (``pip install syft-mpc[dp]``): this package imports without it,
and only the functions that need it (DP-SGD, accountants) import it, or raise an
ImportError that says how to install it. See ``docs/DIFFERENTIAL_PRIVACY.md``.
"""

from syft_mpc.dp.common import make_accountant
from syft_mpc.dp.clipping import clip_update
from syft_mpc.dp.fedavg import FedAvgPrivacy
from syft_mpc.dp.mechanisms import (
    gaussian_delta,
    gaussian_mechanism,
    gaussian_sigma,
    laplace_mechanism,
    laplace_scale,
)
from syft_mpc.dp.pate import compute_q_noisy_max, logmgf_exact, logmgf_from_counts, perform_analysis
from syft_mpc.dp.sgd import dp_sgd_fit

__all__ = [
    "FedAvgPrivacy",
    "clip_update",
    "compute_q_noisy_max",
    "dp_sgd_fit",
    "gaussian_delta",
    "gaussian_mechanism",
    "gaussian_sigma",
    "laplace_mechanism",
    "laplace_scale",
    "logmgf_exact",
    "logmgf_from_counts",
    "make_accountant",
    "perform_analysis",
]
