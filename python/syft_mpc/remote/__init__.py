"""The pointer layer: the control-plane codec and messages, workers, pointer tensors.

Bottom up: :mod:`~syft_mpc.remote.serde` (the typed binary codec), :mod:`~syft_mpc.remote.messages`
(every message kind), :mod:`~syft_mpc.remote.allowlist` (the operations a worker runs),
:mod:`~syft_mpc.remote.pointers`, :mod:`~syft_mpc.remote.workers` (object store and request
handler table, knowing no plug-in) and :mod:`~syft_mpc.remote.torch_methods` (what the hook
attaches to torch).
"""
