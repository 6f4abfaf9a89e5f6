"""The weights part of a model's fingerprint: a SHA-256 over every byte of every tensor.

:func:`weights_digest` hashes each parameter and buffer (name, dtype, shape, then its raw bytes;
bf16 and fp16 are read as bytes, never converted) in 16 MiB chunks on a few threads (``hashlib``
releases the GIL) and hashes the chunk digests in a fixed order, so the result does not depend on
the thread count. About 1.7 GB/s per core here (SHA-NI); see ``docs/design.md``.

Two caches avoid hashing again:

* in memory (:func:`current`): the digest is kept with a *token* of the tensors -- name, object
  id, storage address, shape, dtype, device and autograd version counter of each. Torch bumps the
  version counter on every in-place change it sees (optimizer steps, ``copy_``,
  ``load_state_dict``, ``mul_`` under ``no_grad``), a replaced tensor changes its address and a
  pruned block changes the names, so any such change makes the next fingerprint hash again.
  Writes torch does not count (through ``.data`` or a NumPy view) need ``recompute=True``.
* on disk (:func:`remember_folder`): ``lf.load`` of a model folder reuses a digest stored for that
  folder when the names, sizes and modification times (ns) of its weight files and the dtype are
  unchanged; a digest is stored only when it was computed while the model was still exactly as
  loaded (same token). The store is ``layerfast-fingerprint.json`` beside the safetensors for
  folders inside the layerfast cache (the converted packaged models) and
  ``<cache>/fingerprints/<hash of the folder path>.json`` for other folders, which stay untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import assets
from . import placement

CHUNK = 16 << 20  # bytes per hashed chunk
STORE_NAME = "layerfast-fingerprint.json"


def _tensors(module: nn.Module):
    return placement.named_tensors(module)


def token(module: nn.Module) -> tuple:
    """Cheap identity of every tensor's current contents as far as torch tracks them.

    A weight offloaded by a device map (a ``meta`` placeholder, replaced on every call of its
    module) counts by name, dtype and shape: its contents live in the offload store."""
    return tuple(
        (name, "offloaded", t.dtype, tuple(t.shape))
        if t.device.type == "meta"
        else (name, id(t), t.data_ptr(), t._version, t.dtype, tuple(t.shape), str(t.device))
        for name, t in _tensors(module)
    )


def _chunk_digest(view: memoryview) -> bytes:
    return hashlib.sha256(view).digest()


def weights_digest(module: nn.Module, threads: int | None = None) -> str:
    """SHA-256 (hex) over the names, dtypes, shapes and raw bytes of every parameter and buffer."""
    outer = hashlib.sha256()
    workers = max(1, threads or min(8, torch.get_num_threads()))
    with ThreadPoolExecutor(workers) as pool, torch.no_grad():
        for name, t in _tensors(module):
            outer.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
            t = placement.tensor_value(module, name, t)  # an offloaded weight: its stored value
            data = t.detach().to("cpu").contiguous().reshape(-1)
            raw = memoryview(data.view(torch.uint8).numpy()) if data.numel() else memoryview(b"")
            chunks = [raw[i : i + CHUNK] for i in range(0, len(raw), CHUNK)]
            for d in pool.map(_chunk_digest, chunks):
                outer.update(d)
    return outer.hexdigest()


def current(model: Any, recompute: bool = False) -> str:
    """The weights digest of ``model.hf_model``, reused while its :func:`token` is unchanged."""
    now = token(model.hf_model)
    cached = getattr(model, "_weights_digest", None)
    if not recompute and cached is not None and cached[0] == now:
        return cached[1]
    digest = weights_digest(model.hf_model)
    model._weights_digest = (now, digest)
    pending = getattr(model, "_digest_store", None)
    if pending is not None and pending["token"] == now:
        _write_store(pending, digest)
    return digest


# --- the on-disk store ---------------------------------------------------------------------------
def _store_path(folder: Path) -> Path:
    folder = folder.resolve()
    cache = assets.cache_dir().resolve()
    if folder.is_relative_to(cache):
        return folder / STORE_NAME
    key = hashlib.sha256(str(folder).encode()).hexdigest()[:24]
    return cache / "fingerprints" / f"{key}.json"


def files_signature(folder: Path) -> list[list]:
    """[name, size, mtime_ns] of each weight file (safetensors and their index), sorted."""
    rows = []
    for path in sorted(folder.iterdir()):
        if path.name.endswith((".safetensors", ".safetensors.index.json")):
            st = path.stat()
            rows.append([path.name, st.st_size, st.st_mtime_ns])
    return rows


def remember_folder(model: Any, folder: Path) -> bool:
    """Attach the stored digest of ``folder`` to a model just loaded from it, if one matches.

    Otherwise remember where to store the digest once it is computed on the unchanged model.
    Returns whether a stored digest was reused.
    """
    store = _store_path(folder)
    entry = {
        "store": str(store),
        "folder": str(folder.resolve()),
        "files": files_signature(folder),
        "dtype": str(model.dtype),
        "token": token(model.hf_model),
    }
    model._digest_store = entry
    try:
        saved = json.loads(store.read_text())
    except (OSError, ValueError):
        return False
    if saved.get("folder") == entry["folder"] and saved.get("files") == entry["files"]:
        digest = saved.get("digests", {}).get(entry["dtype"])
        if isinstance(digest, str):
            model._weights_digest = (entry["token"], digest)
            return True
    return False


def _write_store(entry: dict, digest: str) -> None:
    store = Path(entry["store"])
    try:
        saved = json.loads(store.read_text())
        if saved.get("folder") != entry["folder"] or saved.get("files") != entry["files"]:
            saved = {}
    except (OSError, ValueError):
        saved = {}
    digests = {**saved.get("digests", {}), entry["dtype"]: digest}
    data = {"folder": entry["folder"], "files": entry["files"], "digests": digests}
    try:  # best effort: a read-only cache only costs a re-hash next time
        store.parent.mkdir(parents=True, exist_ok=True)
        part = store.with_name(f"{store.name}.{os.getpid()}.part")
        part.write_text(json.dumps(data, indent=1))
        part.replace(store)
    except OSError:
        pass
