"""The issue-3 tutorial flows with every worker in its own process.

    syft-mpc launch --workers bob,alice,secure_worker examples/socket_workers_demo.py
    # or: python -m syft_mpc launch --workers bob,alice,secure_worker examples/socket_workers_demo.py

`syft-mpc launch` starts the three workers on free ports with a fresh token, runs this
script with SYFT_MPC_WORKERS / SYFT_MPC_TOKEN set, and stops them afterwards.
"""

import gc
import time

import torch
from torch import nn, optim

import syft_mpc as sy

hook = sy.TorchHook(torch)
bob, alice, secure_worker = sy.workers_from_env(hook)
print("workers:", bob, alice, secure_worker)

# --- flow 1: send, remote execution, autograd ---------------------------------------
x = torch.tensor([1, 2, 3, 4, 5]).send(bob)
y = torch.tensor([1, 1, 1, 1, 1]).send(bob)
z = x + y
print("torch.add(x + y, 1).sum() on bob:", torch.add(z, 1).sum().get())
a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True).send(bob)
b = torch.tensor([4.0, 5.0, 6.0], requires_grad=True).send(bob)
(a * b).sum().backward()
print("gradient of sum(a*b) w.r.t. b, computed on bob:", b.get().grad)
try:
    x.view(7)
except RuntimeError as e:
    print("remote error:", e)

# --- flow 2: pointer chains and move (bob -> alice directly) --------------------------
p = torch.tensor([1, 2, 3, 4, 5]).send(bob).send(alice)
print("chain me -> alice -> bob, p + p:", (p + p).get().get())
m = torch.tensor([7, 8]).send(bob).move(alice)
print("moved to", m.location.id, "->", m.get())
del x, y, z, a, p
gc.collect()  # the remote error's traceback keeps x in a reference cycle
sy.local_worker.flush_gc()
print("objects left on bob after GC:", bob.sync())

# --- remote training (PySyft tutorial part 2) and averaging (part 4) -----------------
torch.manual_seed(0)
data = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1.0]])
target = torch.tensor([[0], [0], [1], [1.0]])
datasets = [(data[0:2].send(bob), target[0:2].send(bob)), (data[2:].send(alice), target[2:].send(alice))]
model = nn.Linear(2, 1)
opt = optim.SGD(params=model.parameters(), lr=0.1)
for epoch in range(10):
    total = 0.0
    for data_ptr, target_ptr in datasets:
        model.send(data_ptr.location)
        opt.zero_grad()
        loss = ((model(data_ptr) - target_ptr) ** 2).sum()
        loss.backward()
        opt.step()
        model.get()
        total += float(loss.get())
    if epoch % 3 == 0 or epoch == 9:
        print(f"epoch {epoch}: loss {total:.4f}")
print("trained weight", model.weight.data.tolist(), "bias", model.bias.data.tolist())

bobs_model = model.copy().send(bob)
alices_model = model.copy().send(alice)
bobs_model.move(secure_worker)
alices_model.move(secure_worker)
with torch.no_grad():
    model.weight.set_(((alices_model.weight.data + bobs_model.weight.data) / 2).get())
    model.bias.set_(((alices_model.bias.data + bobs_model.bias.data) / 2).get())
print("averaged on secure_worker:", model.weight.data.tolist(), model.bias.data.tolist())

# --- timings ----------------------------------------------------------------------------
u = torch.arange(10.0).send(bob)
v = torch.ones(10).send(bob)
n = 200
t0 = time.perf_counter()
for _ in range(n):
    (u + v).get()
print(f"pointer + pointer on 10 elements, .get() included: {(time.perf_counter() - t0) / n * 1e6:.0f} us per op")
big = torch.randn(25_000_000)  # 100 MB
t0 = time.perf_counter()
back = big.send(bob).get()
dt = time.perf_counter() - t0
assert torch.equal(back, big)
print(f"100 MB send + get: {dt * 1e3:.0f} ms ({2 * big.numel() * 4 / dt / 1e9:.2f} GB/s counting both directions)")
