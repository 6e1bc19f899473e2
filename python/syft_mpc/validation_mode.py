"""Deprecated alias of :mod:`syft_mpc.encrypted.validation` (this path will be removed in the next release)."""

from syft_mpc.deprecated import moved

moved(__name__, "syft_mpc.encrypted.validation")
