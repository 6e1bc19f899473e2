"""MPC sessions among workers: the data plane behind shared tensors.

:mod:`~syft_mpc.mpc_session.ops` is the table of operations a share holder runs,
:mod:`~syft_mpc.mpc_session.worker` the handlers of the MPC requests on a worker, and
:mod:`~syft_mpc.mpc_session.driver` the driver's groups of share holders. Everything travels
as typed messages through the worker codec (no code, no names).
"""

from syft_mpc.mpc_session.driver import DEFAULT_TIMEOUT_S, Group, close_all_sessions, fan_out, group_of
from syft_mpc.mpc_session.ops import INTERACTIVE, MPC_OPS, infer_shapes
from syft_mpc.mpc_session.worker import close_sessions_of

__all__ = ["DEFAULT_TIMEOUT_S", "Group", "INTERACTIVE", "MPC_OPS", "close_all_sessions", "close_sessions_of", "fan_out", "group_of", "infer_shapes"]
