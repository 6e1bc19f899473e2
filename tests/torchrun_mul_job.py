"""One rank of a torchrun MPC job (used by tests/test_rendezvous.py): secure mul vs plaintext.

Ranks 0..WORLD_SIZE-2 are parties, the last rank the dealer (syft_mpc.net.rendezvous). Each party
prints one line ``result <rank> <json list>``; the dealer prints ``dealer served <n>``.
"""

from __future__ import annotations

import json
import os

import numpy as np

import syft_mpc as sy

p = sy.mpc.from_torchrun(session=os.environ.get("JOB_SESSION", "syft-mpc"), timeout_s=60.0)
if isinstance(p, sy.Dealer):
    served = p.serve()
    p.close()
    print(f"dealer served {served}", flush=True)
else:
    rng = np.random.default_rng(7)
    x, y = rng.normal(0, 3, 1000), rng.normal(0, 3, 1000)
    with p:
        xs = p.input(0, sy.encode(x) if p.id == 0 else None, shape=x.shape)
        ys = p.input(1, sy.encode(y) if p.id == 1 else None, shape=y.shape)
        z = sy.decode(p.open(p.truncate(p.mul(xs, ys), 1 << 16)))
    assert np.allclose(z, x * y, atol=1e-3), float(np.abs(z - x * y).max())
    print(f"result {p.id} {json.dumps(float(np.abs(z - x * y).max()))}", flush=True)
