"""Deprecated alias of :mod:`syft_mpc.remote.workers` (this path will be removed in the next release)."""

from syft_mpc.deprecated import moved

moved(__name__, "syft_mpc.remote.workers")
