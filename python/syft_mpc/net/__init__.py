"""Workers over the network: :mod:`~syft_mpc.net.socket_worker` (the driver's handle on a worker
in another process), :mod:`~syft_mpc.net.server` (the worker process), :mod:`~syft_mpc.net.launch`
(local worker processes), :mod:`~syft_mpc.net.cli` (``syft-mpc``), :mod:`~syft_mpc.net.rendezvous`
(torchrun) and the environment variables they read (:mod:`~syft_mpc.net.env`).
"""
