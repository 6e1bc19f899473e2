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

Wire messages (handled by every worker; kinds 50-52): :class:`CheckpointSave`,
:class:`CheckpointInfo`, :class:`CheckpointLoad`. A worker's file is
``<state dir>/<tag>.npz`` (numpy ``savez``; read back with ``allow_pickle=False``): its
shares, the driver's description of them (opaque to the worker, encoded with
:mod:`syft_mpc.serde`), the worker's id and a random nonce that ties together the files
one :func:`save` call wrote on the different holders. Tags are restricted to
``[A-Za-z0-9][A-Za-z0-9_.-]*`` (at most 128 characters), checked when a message is
decoded and again before any path is built, so a tag can never name a file outside the
directory.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch

from syft_mpc import serde
from syft_mpc.errors import ProtocolError, SerializationError
from syft_mpc.messages import MAX_ID, new_id
from syft_mpc.serde import Struct, register
from syft_mpc.workers import BaseWorker, register_handler

if TYPE_CHECKING:
    from syft_mpc.shared import SharedTensor

__all__ = ["save", "restore", "CheckpointSave", "CheckpointInfo", "CheckpointLoad", "state_dir", "check_tag"]

_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_FORMAT = 1
_MAX_META = 16 << 20  # the driver's description: names and shapes, never data


def check_tag(tag: object) -> str:
    """Returns ``tag`` if it is a valid checkpoint name (letters, digits, ``_.-``, not starting
    with ``.`` or ``-``, at most 128 characters); raises ValueError otherwise."""
    if not isinstance(tag, str) or _TAG.fullmatch(tag) is None:
        raise ValueError(
            f"bad checkpoint tag {tag!r}: use 1 to 128 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit (a tag names a file in the worker's state directory, never a path)"
        )
    return tag


def _wire_tag(tag: str) -> None:
    try:
        check_tag(tag)
    except ValueError as e:
        raise SerializationError(str(e)) from None


def _check_ids(ids: list[Any]) -> None:
    if len(ids) > 1_000_000:
        raise SerializationError("a checkpoint holds at most 1,000,000 tensors")
    for i in ids:
        if type(i) is not int or not 0 <= i <= MAX_ID:
            raise SerializationError(f"checkpoint object ids must be object ids (0 <= id < 2**63), got {i!r}")


def _check_nonce(nonce: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{32}", nonce):
        raise SerializationError("a checkpoint nonce is 32 lowercase hex digits")


@register
@dataclass
class CheckpointSave(Struct):
    """Write this worker's objects ``ids`` (int64 shares) to ``<state dir>/<tag>.npz``,
    with ``nonce`` (the same on every holder of one save) and ``meta`` (the driver's
    description, stored as it is). Replaces an earlier checkpoint of that tag atomically."""

    KIND: ClassVar[int] = 50
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,), (str,), (list,), (bytes,))
    tag: str
    nonce: str
    ids: list[int]
    meta: bytes

    def validate(self) -> None:
        _wire_tag(self.tag)
        _check_nonce(self.nonce)
        _check_ids(self.ids)
        if len(self.meta) > _MAX_META:
            raise SerializationError("checkpoint description too large")


@register
@dataclass
class CheckpointInfo(Struct):
    """Describe checkpoint ``tag`` of this worker: ``{"nonce", "count", "meta"}``."""

    KIND: ClassVar[int] = 51
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,),)
    tag: str

    def validate(self) -> None:
        _wire_tag(self.tag)


@register
@dataclass
class CheckpointLoad(Struct):
    """Load checkpoint ``tag`` (it must carry ``nonce``) and store its tensors under ``ids``
    (fresh ids chosen by the driver, the same on every holder). Replies with their shapes."""

    KIND: ClassVar[int] = 52
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,), (str,), (list,))
    tag: str
    nonce: str
    ids: list[int]

    def validate(self) -> None:
        _wire_tag(self.tag)
        _check_nonce(self.nonce)
        _check_ids(self.ids)


# ============================================================================ worker side


def state_dir(worker: BaseWorker, create: bool = True) -> Path:
    """Where ``worker`` keeps its checkpoints (created, mode 0700, on the first save).

    ``worker.state_dir`` when set (``syft-mpc worker --state-dir DIR`` sets it; a
    VirtualWorker's can be assigned), else ``<temp dir>/syft-mpc-<uid>/worker-<id>``.
    """
    configured = getattr(worker, "state_dir", None)
    if configured is not None:
        path = Path(configured)
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path
    uid = os.getuid() if hasattr(os, "getuid") else 0
    base = Path(tempfile.gettempdir()) / f"syft-mpc-{uid}"
    path = base / ("worker-" + re.sub(r"[^A-Za-z0-9_.-]", "_", worker.id))
    if not create and not base.exists():
        return path
    base.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(base)
    # The temp dir is shared: refuse a directory (or symlink) someone else put there.
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != uid) or st.st_mode & 0o077:
        raise PermissionError(f"{base} is not a private directory of this user; start the worker with --state-dir DIR")
    if create:
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def _path(worker: BaseWorker, tag: str, create: bool = False) -> Path:
    check_tag(tag)  # again: a handler may be called without the decoder's check
    d = state_dir(worker, create)
    p = d / f"{tag}.npz"
    if p.resolve().parent != d.resolve():
        raise ValueError(f"checkpoint tag {tag!r} does not name a file in {d}")
    return p


def _text(a: np.ndarray) -> str:
    return bytes(np.asarray(a, dtype=np.uint8)).decode("utf-8")


def _bytes_array(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.uint8)


def _handle_save(worker: BaseWorker, msg: CheckpointSave) -> tuple[Any, None]:
    arrays: dict[str, np.ndarray] = {}
    for k, obj_id in enumerate(msg.ids):
        t = worker._get_obj(obj_id)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.requires_grad:
            raise TypeError(
                f"object {obj_id} on worker {worker.id} is not a share (an int64 tensor); "
                "only shared tensors can be checkpointed"
            )
        arrays[f"s{k}"] = t.detach().contiguous().numpy()
    path = _path(worker, msg.tag, create=True)
    arrays["format"] = np.array([_FORMAT], dtype=np.int64)
    arrays["worker"] = _bytes_array(worker.id.encode("utf-8"))
    arrays["nonce"] = _bytes_array(msg.nonce.encode("ascii"))
    arrays["meta"] = _bytes_array(msg.meta)
    fd, tmp = tempfile.mkstemp(prefix=f".{msg.tag}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a crash mid-save leaves the previous checkpoint of this tag intact
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # and the rename itself survives a crash
        finally:
            os.close(dir_fd)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return None, None


def _open(worker: BaseWorker, tag: str) -> Any:
    path = _path(worker, tag)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"worker {worker.id} has no checkpoint {tag!r} in {path.parent}") from None
    try:
        fmt = int(data["format"][0])
        owner = _text(data["worker"])
    except Exception as e:
        data.close()
        raise ValueError(f"{path} on worker {worker.id} is not a syft_mpc checkpoint ({e})") from None
    if fmt != _FORMAT:
        data.close()
        raise ValueError(f"{path} on worker {worker.id} has checkpoint format {fmt}, this version reads {_FORMAT}")
    if owner != worker.id:
        data.close()
        raise ValueError(
            f"checkpoint {tag!r} in {path.parent} was written by worker {owner}, not {worker.id}; "
            "give every worker its own --state-dir"
        )
    return data


def _count(data: Any) -> int:
    return sum(1 for k in data.files if k.startswith("s") and k[1:].isdigit())


def _handle_info(worker: BaseWorker, msg: CheckpointInfo) -> tuple[Any, None]:
    with _open(worker, msg.tag) as data:
        return {"nonce": _text(data["nonce"]), "count": _count(data), "meta": bytes(data["meta"])}, None


def _handle_load(worker: BaseWorker, msg: CheckpointLoad) -> tuple[Any, None]:
    with _open(worker, msg.tag) as data:
        if _text(data["nonce"]) != msg.nonce:
            raise ValueError(
                f"checkpoint {msg.tag!r} on worker {worker.id} was overwritten by another save since it was inspected"
            )
        n = _count(data)
        if n != len(msg.ids):
            raise ValueError(f"checkpoint {msg.tag!r} on worker {worker.id} holds {n} tensors, {len(msg.ids)} ids given")
        tensors = []
        for k in range(n):
            a = data[f"s{k}"]
            if a.dtype != np.int64:
                raise ValueError(f"checkpoint {msg.tag!r} on worker {worker.id}: tensor {k} is {a.dtype}, not an int64 share")
            tensors.append(torch.from_numpy(np.array(a)))  # an owned, writable copy
    for obj_id in msg.ids:
        if obj_id in worker._objects:
            raise ValueError(f"object id {obj_id} is already in use on worker {worker.id}")
    for obj_id, t in zip(msg.ids, tensors):
        worker._store(obj_id, t)
    return [list(t.shape) for t in tensors], None


register_handler(CheckpointSave, _handle_save)
register_handler(CheckpointInfo, _handle_info)
register_handler(CheckpointLoad, _handle_load)


# ============================================================================ driver side


def _entries(objs: Mapping[str, Any]) -> list[tuple[str, "SharedTensor"]]:
    """(name, shared tensor) for every piece of shared state in ``objs``, in a fixed order."""
    from syft_mpc.shared import SharedTensor

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
    from syft_mpc.shared import SharedTensor

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
    from syft_mpc.mpc_session import fan_out

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
            "format": _FORMAT,
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
    from syft_mpc.shared import SharedTensor
    from syft_mpc.workers import local_worker

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
    from syft_mpc.mpc_session import fan_out, group_of
    from syft_mpc.shared import SharedTensor, _Cell, _Shares
    from syft_mpc.workers import local_worker

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
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
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
        tensors[name] = SharedTensor(_Cell(_Shares(group, i, shape)), scale, base, precision, dtype, False)
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
    old._cell.shares = new._cell.shares
    old._cell.pos_mask = None
    old._cell.aux = None


def _install(
    tensors: dict[str, "SharedTensor"], grads: dict[str, bool], objs: Mapping[str, Any], tag: str, public: "dict[str, Any] | None" = None
) -> None:
    from syft_mpc.shared import SharedTensor

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
