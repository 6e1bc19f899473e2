"""Checkpoints of shared state: every share holder saves its own shares, and loads them back after a restart.

A shared model never exists in one place, so ``torch.save(model.state_dict())`` would
have to decrypt it. Instead :func:`save` asks each share holder to write *its* shares of
the named tensors to a file in a directory the worker owns (``syft-mpc worker
--state-dir DIR``); :func:`restore` asks the holders (possibly restarted, on new ports)
to load them back and rebuilds the shared tensors in the driver. The MPC session and the
crypto provider's state are not saved: a new session is opened on the next operation.

    >>> import tempfile, torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob, alice, james = (sy.VirtualWorker(hook, id=i) for i in ("ck-bob", "ck-alice", "ck-james"))
    >>> tmp = tempfile.TemporaryDirectory()
    >>> bob.state_dir, alice.state_dir = tmp.name + "/bob", tmp.name + "/alice"
    >>> model = torch.nn.Linear(2, 1).fix_precision().share(bob, alice, crypto_provider=james)
    >>> sy.checkpoint.save("step-10", model=model)["names"]
    ['model/weight', 'model/bias']
    >>> fresh = torch.nn.Linear(2, 1)                        # e.g. in a new driver process
    >>> _ = sy.checkpoint.restore("step-10", bob, alice, crypto_provider=james, model=fresh)
    >>> torch.equal(fresh.weight.get(), model.weight.get())
    True
    >>> tmp.cleanup()

The worker side is :mod:`syft_mpc.checkpoint.worker`; the wire messages (kinds 50-52): :class:`CheckpointSave`,
:class:`CheckpointInfo`, :class:`CheckpointLoad`. A worker's file is
``<state dir>/<tag>.npz`` (numpy ``savez``; read back with ``allow_pickle=False``): its
shares, the driver's description of them (opaque to the worker, encoded with
:mod:`syft_mpc.remote.serde`), the worker's id and a random nonce that ties together the files
one :func:`save` call wrote on the different holders. Tags are restricted to
``[A-Za-z0-9][A-Za-z0-9_.-]*`` (at most 128 characters), checked when a message is
decoded and again before any path is built, so a tag can never name a file outside the
directory.
"""

from __future__ import annotations

import secrets
from typing import Any, Iterator, Mapping

import torch

from syft_mpc.checkpoint.worker import FORMAT
from syft_mpc.encrypted.tensor import SharedTensor
from syft_mpc.errors import ProtocolError
from syft_mpc.mpc_session.driver import fan_out, group_of
from syft_mpc.remote import serde
from syft_mpc.remote.messages import CheckpointInfo, CheckpointLoad, CheckpointSave, check_tag, new_id
from syft_mpc.remote.workers import BaseWorker, local_worker

__all__ = ["restore", "save"]



def _entries(objs: Mapping[str, Any]) -> list[tuple[str, "SharedTensor"]]:
    """(name, shared tensor) for every piece of shared state in ``objs``, in a fixed order."""
    out: list[tuple[str, SharedTensor]] = []
    for key, obj in objs.items():
        if isinstance(obj, SharedTensor):
            out.append((key, obj))
        elif isinstance(obj, torch.nn.Module):
            for pname, p in obj.named_parameters():
                if not isinstance(p, SharedTensor):
                    raise TypeError(
                        f"parameter {pname} of {key} is not shared; a checkpoint holds shared state only "
                        "(share the model first, or save plain tensors with torch.save)"
                    )
                out.append((f"{key}/{pname}", p))
            for bname, b in obj.named_buffers():
                if not isinstance(b, SharedTensor):
                    raise TypeError(f"buffer {bname} of {key} is not shared; a checkpoint holds shared state only")
                out.append((f"{key}/buffers/{bname}", b))
        elif isinstance(obj, torch.optim.Optimizer):
            for name, k, v in _optimizer_state(key, obj):
                if v is None or _is_public_counter(v):
                    continue  # counters go into the description: see _public_state
                if not isinstance(v, SharedTensor):
                    raise TypeError(
                        f"optimizer state {k!r} of {key} is a {type(v).__name__}, not a shared tensor; "
                        "a checkpoint holds shared state and public step counters only"
                    )
                out.append((name, v))
        else:
            raise TypeError(f"cannot checkpoint {key}={type(obj).__name__}: pass modules, optimizers or shared tensors")
    return out


def _optimizer_state(key: str, opt: torch.optim.Optimizer) -> Iterator[tuple[str, str, Any]]:
    """(checkpoint name ``key/group/param/state-key``, state key, value) of every entry of ``opt``'s state."""
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            for k, v in opt.state.get(p, {}).items():
                yield f"{key}/{gi}/{pi}/{k}", k, v


def _state_slot(opt: torch.optim.Optimizer, name: str, prefix: str) -> tuple[Any, str]:
    """The (parameter, state key) that checkpoint name ``name`` (``prefix`` + ``group/param/key``) refers to in ``opt``."""
    gi, pi, k = name[len(prefix):].split("/", 2)
    try:
        return opt.param_groups[int(gi)]["params"][int(pi)], k
    except (IndexError, ValueError):
        raise ValueError(f"{name}: the optimizer here has no parameter group {gi} / parameter {pi}") from None


def _is_public_counter(v: Any) -> bool:
    """A plain scalar of optimizer state, e.g. Adam's ``step``: public (every party knows how
    many steps ran), so it is kept in the checkpoint's description, not as shares."""
    if isinstance(v, SharedTensor):
        return False
    return isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1 and v.dim() == 0)


def _public_state(objs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) of every public counter in the optimizers of ``objs`` (names as in :func:`_entries`)."""
    return [
        (name, v.detach().clone() if isinstance(v, torch.Tensor) else float(v))
        for key, obj in objs.items()
        if isinstance(obj, torch.optim.Optimizer)
        for name, _, v in _optimizer_state(key, obj)
        if _is_public_counter(v)
    ]


def save(tag: str, **objs: Any) -> dict[str, Any]:
    """Saves the shared state in ``objs`` on its share holders, under ``tag``.

    Keyword arguments name what is saved: shared modules (their parameters), optimizers
    (their shared state, e.g. SGD momentum buffers) and shared tensors. Each share holder
    writes its own shares to ``<its state dir>/<tag>.npz`` (replacing an earlier
    checkpoint of that tag); nothing is reconstructed and no share leaves its holder. All
    the state must be shared among the same workers. Returns a summary
    (``tag``, ``holders``, ``crypto_provider``, ``names``).

        >>> sy.checkpoint.save("epoch-3", model=model, optimizer=opt)   # doctest: +SKIP
    """
    check_tag(tag)
    entries = _entries(objs)
    if not entries:
        raise ValueError("nothing to checkpoint: pass shared modules, optimizers or tensors as keywords")
    group = entries[0][1].group
    key = ([w.id for w in group.workers], group.crypto_provider.id)
    for name, t in entries:
        g = t.group
        if ([w.id for w in g.workers], g.crypto_provider.id) != key:
            raise ValueError(
                f"{name} is shared among {g} but {entries[0][0]} among {group}; "
                "a checkpoint holds state shared among one set of workers"
            )
    meta = serde.encode(
        {
            "format": FORMAT,
            "holders": key[0],
            "crypto_provider": key[1],
            "truncation": group.truncation,
            "entries": [
                (name, list(t.shape), t.dtype, int(t.scale), int(t.base), int(t.precision_fractional), bool(t.requires_grad))
                for name, t in entries
            ],
            "public": _public_state(objs),
        }
    )
    nonce = secrets.token_hex(16)
    ids = [t.share_id for _, t in entries]
    fan_out([(w, CheckpointSave(tag, nonce, ids, meta)) for w in group.workers])
    return {"tag": tag, "holders": key[0], "crypto_provider": key[1], "names": [n for n, _ in entries]}


def _holders_of(objs: Mapping[str, Any]) -> list[BaseWorker]:
    """The share holders of shared state already in ``objs``, resolved again by id (so a
    worker restarted under the same id, with a new SocketWorker, is the one used)."""
    from syft_mpc.remote.workers import local_worker

    for obj in objs.values():
        cands: list[Any] = [obj]
        if isinstance(obj, torch.nn.Module):
            cands = list(obj.parameters())
        elif isinstance(obj, torch.optim.Optimizer):
            cands = [v for s in obj.state.values() for v in s.values()]
        for c in cands:
            if isinstance(c, SharedTensor):
                return [local_worker.get_worker(w.id) for w in c.group.workers]
    raise ValueError("pass the share holders: sy.checkpoint.restore(tag, bob, alice, model=model, ...)")


def restore(tag: str, *workers: BaseWorker, crypto_provider: "BaseWorker | None" = None, **objs: Any) -> dict[str, "SharedTensor"]:
    """Loads checkpoint ``tag`` from the share holders and puts it into ``objs``.

    ``workers`` are the share holders (any order; by default those of the shared state
    already in ``objs``, looked up by id, so fresh ``SocketWorker``s for restarted workers
    are used); ``crypto_provider`` defaults to the worker known by the id saved in the
    checkpoint. Keyword arguments are matched by name with :func:`save`'s: a module gets
    its parameters back (a plain module of the same architecture becomes a shared one; a
    shared one is updated in place), an optimizer its state (and, if it was built over the
    module's plain parameters, the shared parameters that replace them), a shared tensor
    its shares. Returns every restored tensor by name (``"model/fc1.weight"``,
    ``"optimizer/0/1/momentum_buffer"``, or the keyword of a tensor).

        >>> bob, alice, carol = sy.workers_from_env(hook)   # restarted workers   # doctest: +SKIP
        >>> model, opt = Net(), None                                                # doctest: +SKIP
        >>> sy.checkpoint.restore("epoch-3", bob, alice, crypto_provider=carol, model=model)  # doctest: +SKIP
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)     # doctest: +SKIP
        >>> sy.checkpoint.restore("epoch-3", optimizer=opt)                      # doctest: +SKIP
    """
    check_tag(tag)
    holders = list(workers) if workers else _holders_of(objs)
    infos = fan_out([(w, CheckpointInfo(tag)) for w in holders])
    nonces = {info["nonce"] for info in infos}
    if len(nonces) != 1:
        raise ProtocolError(
            f"checkpoint {tag!r} differs between workers {', '.join(w.id for w in holders)} (written by different "
            "save() calls, e.g. one that failed on some of them); restore another tag"
        )
    nonce = nonces.pop()
    meta = serde.decode(infos[0]["meta"])
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ProtocolError(f"checkpoint {tag!r} has a description this version cannot read")
    saved = sorted(meta["holders"])
    if sorted(w.id for w in holders) != saved:
        raise ValueError(
            f"checkpoint {tag!r} was shared among {', '.join(saved)}, not {', '.join(w.id for w in holders)}; "
            "restore it on the same workers (restarted workers keep their ids)"
        )
    cp = crypto_provider if crypto_provider is not None else local_worker.get_worker(meta["crypto_provider"])
    group = group_of(holders, cp)
    group.truncation = meta["truncation"]
    entries = meta["entries"]
    ids = [new_id() for _ in entries]
    try:
        shapes = fan_out([(w, CheckpointLoad(tag, nonce, ids)) for w in holders])
    except BaseException:
        group._delete(ids)  # whatever some holders loaded
        raise
    tensors: dict[str, SharedTensor] = {}
    grads: dict[str, bool] = {}
    for k, ((name, shape, dtype, scale, base, precision, requires_grad), i) in enumerate(zip(entries, ids)):
        if any(list(s[k]) != list(shape) for s in shapes):
            group._delete(ids)
            raise ProtocolError(f"checkpoint {tag!r}: the holders' shares of {name} do not have its shape {shape}")
        tensors[name] = SharedTensor.from_stored(group, i, shape, scale=scale, base=base, precision=precision, dtype=dtype)
        grads[name] = requires_grad
    _install(tensors, grads, objs, tag, dict(meta.get("public", [])))
    return tensors


def _take(tensors: dict[str, "SharedTensor"], name: str, tag: str) -> "SharedTensor":
    try:
        return tensors[name]
    except KeyError:
        raise KeyError(f"checkpoint {tag!r} has no {name} (it holds {', '.join(tensors) or 'nothing'})") from None


def _put(old: Any, new: "SharedTensor", name: str) -> None:
    """Moves ``new``'s shares into the shared tensor ``old`` in place (its aliases and the
    optimizer's references stay valid)."""
    if tuple(old.shape) != tuple(new.shape) or (old.scale, old.base) != (new.scale, new.base):
        raise ValueError(
            f"{name}: the checkpoint holds shape {tuple(new.shape)} at scale {new.scale}, the tensor here "
            f"has shape {tuple(old.shape)} at scale {old.scale}"
        )
    old.cell.shares = new.cell.shares
    old.cell.pos_mask = None
    old.cell.aux = None


def _install(
    tensors: dict[str, "SharedTensor"], grads: dict[str, bool], objs: Mapping[str, Any], tag: str, public: "dict[str, Any] | None" = None
) -> None:
    replaced: dict[int, torch.nn.Parameter] = {}  # id(plain parameter) -> the shared one replacing it
    for key, obj in objs.items():  # modules first: optimizers may refer to their parameters
        if not isinstance(obj, torch.nn.Module):
            continue
        for mname, m in obj.named_modules():
            for pname, p in list(m._parameters.items()):
                if p is None:
                    continue
                name = f"{key}/{mname + '.' if mname else ''}{pname}"
                new = _take(tensors, name, tag)
                if isinstance(p, SharedTensor):
                    _put(p, new, name)
                    tensors[name] = p
                    continue
                if tuple(p.shape) != tuple(new.shape):
                    raise ValueError(f"{name}: the checkpoint holds shape {tuple(new.shape)}, the module {tuple(p.shape)}")
                param = torch.nn.Parameter(new, requires_grad=grads[name])
                m._parameters[pname] = param
                replaced[id(p)] = param
                tensors[name] = param  # type: ignore[assignment]
            for bname, b in list(m._buffers.items()):
                name = f"{key}/buffers/{mname + '.' if mname else ''}{bname}"
                if b is None or name not in tensors:
                    continue
                if isinstance(b, SharedTensor):
                    _put(b, tensors[name], name)
                    tensors[name] = b
                else:
                    m._buffers[bname] = tensors[name]
    for key, obj in objs.items():
        if isinstance(obj, torch.nn.Module):
            continue
        if isinstance(obj, torch.optim.Optimizer):
            for group in obj.param_groups:
                params = [replaced.get(id(p), p) for p in group["params"]]
                for old, new_p in zip(group["params"], params):
                    if new_p is not old and old in obj.state:
                        obj.state[new_p] = obj.state.pop(old)
                group["params"] = params
            prefix = f"{key}/"
            for name, t in tensors.items():
                if name.startswith(prefix):
                    p, k = _state_slot(obj, name, prefix)
                    if tuple(p.shape) != tuple(t.shape):
                        raise ValueError(f"{name}: shape {tuple(t.shape)} does not match its parameter's {tuple(p.shape)}")
                    obj.state[p][k] = t
            for name, v in (public or {}).items():
                if name.startswith(prefix):
                    p, k = _state_slot(obj, name, prefix)
                    obj.state[p][k] = v.clone() if isinstance(v, torch.Tensor) else v
        elif isinstance(obj, SharedTensor):
            new = _take(tensors, key, tag)
            _put(obj, new, key)
            tensors[key] = obj
        elif obj is not None:
            raise TypeError(f"cannot restore into {key}={type(obj).__name__}: pass modules, optimizers or shared tensors")
