"""Checkpoints of shared state: :func:`save` and :func:`restore` (the driver side, in
:mod:`syft_mpc.checkpoint.driver`); each share holder writes and reads its own shares
(:mod:`syft_mpc.checkpoint.worker`)."""

from syft_mpc.checkpoint.driver import restore, save
from syft_mpc.checkpoint.worker import state_dir
from syft_mpc.remote.messages import check_tag

__all__ = ["check_tag", "restore", "save", "state_dir"]
