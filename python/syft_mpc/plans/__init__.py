"""Plans and protocols (PySyft's ``sy.func2plan``, ``sy.Plan``, ``sy.Protocol``).

A plan is a traced graph of allowlisted aten ops carried in the binary message format
(:mod:`syft_mpc.remote.messages`: ``PlanDef``); :mod:`.graph` traces, checks and runs it,
:mod:`.plan` is the driver's API, :mod:`.protocol` chains plans over workers, and
:mod:`.worker` holds the request handlers that the composition root registers.
"""
