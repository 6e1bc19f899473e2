"""The worker side of checkpoints: each share holder writes its own shares to a file and reads them back.

A worker's file is ``<state dir>/<tag>.npz`` (numpy ``savez``; read back with
``allow_pickle=False``): its shares, the driver's description of them (opaque to the worker,
encoded with :mod:`syft_mpc.remote.serde`), the worker's id and a random nonce that ties
together the files one save wrote on the different holders. Tags are checked when a message
is decoded (:func:`~syft_mpc.remote.messages.check_tag`) and again before any path is built,
so a tag can never name a file outside the directory. :data:`HANDLERS` maps the checkpoint
requests to their handlers; the composition root (:mod:`syft_mpc.hook`) registers them.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from syft_mpc.remote.messages import CheckpointInfo, CheckpointLoad, CheckpointSave, check_tag
from syft_mpc.remote.workers import BaseWorker

__all__ = ["FORMAT", "HANDLERS", "state_dir"]

FORMAT = 1
"""The version of a checkpoint file."""



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
    arrays["format"] = np.array([FORMAT], dtype=np.int64)
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
    if fmt != FORMAT:
        data.close()
        raise ValueError(f"{path} on worker {worker.id} has checkpoint format {fmt}, this version reads {FORMAT}")
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


HANDLERS: dict[type, Callable[..., "tuple[Any, Callable[[], None] | None]"]] = {
    CheckpointSave: _handle_save,
    CheckpointInfo: _handle_info,
    CheckpointLoad: _handle_load,
}
"""Request type -> handler(worker, request) -> (reply value, commit or None)."""
