"""PySyft 0.2's ``syft.frameworks.torch.fl.utils``: averaging models returned by workers."""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch

__all__ = ["federated_avg"]


def federated_avg(models: "Mapping[Any, torch.nn.Module]") -> torch.nn.Module:
    """The plain average of the models' parameters (all of one architecture), as a copy of the
    first model (McMahan et al. 2017, equal weights as in PySyft's ``utils.federated_avg``)."""
    if not models:
        raise ValueError("federated_avg needs at least one model")
    ms = list(models.values())
    out = copy.deepcopy(ms[0])
    with torch.no_grad():
        for i, p in enumerate(out.parameters()):
            p.copy_(torch.stack([list(m.parameters())[i].detach() for m in ms]).mean(0))
    return out
