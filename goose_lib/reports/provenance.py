"""Provenance of a run: code version, seed, parameter hash, data and checkpoint fingerprints,
library versions, device and wall time, written next to the run as ``provenance.json``.

Which parameters name inputs is declared by the parameter class
(:func:`goose_lib.config.input_param` / :func:`~goose_lib.config.declared_inputs`): a ``data_root``
is fingerprinted as a dataset, a ``sam3_checkpoint`` and a student ``checkpoint`` by their files
(a list of checkpoints, an ensemble, member by member).
Embedded names resolve through the data / models layers' resolvers (written on first use); relative
paths are read relative to the run folder (the notebook's working directory).

Fingerprints are cached per process, so an ablation pays for each input once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from goose_lib.config import InputKind
from goose_lib.io import sha256_json
from goose_lib.paths import UNTRAINED, repo_root

LIBRARIES: tuple[str, ...] = (
    "goose-sam3", "torch", "transformers", "safetensors", "numpy", "pandas", "matplotlib",
    "papermill", "nbconvert", "nbclient", "ipykernel", "ipywidgets",
)
"""Distributions whose versions every provenance record lists (None when not installed)."""


def params_hash(params: Mapping[str, Any]) -> str:
    """sha256 of the parameters as canonical JSON (key order does not matter)."""
    return sha256_json(dict(params))


@lru_cache(maxsize=1)
def source_hash() -> str:
    """sha256 over the installed ``goose_lib`` sources (relative path + bytes of every .py file
    and packaged resource): the code a run executes, independent of git."""
    pkg = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(p for p in pkg.rglob("*") if p.is_file() and p.suffix in {".py", ".csv", ".json"}
                       and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(pkg)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=4)
def code_version(repo: str | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None, "source_hash": sha256}``; commit/dirty
    are None outside a git checkout (e.g. an installed wheel)."""
    root = Path(repo) if repo else repo_root()
    out: dict[str, Any] = {"commit": None, "dirty": None, "source_hash": source_hash()}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=False,
                                capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            out["commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    check=False, capture_output=True, text=True, timeout=10)
            out["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


@lru_cache(maxsize=1)
def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions of ``names`` (read from package metadata; nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _tree_listing(root: Path) -> list[tuple[str, int]]:
    """(relative posix path, size) of every non-hidden file under ``root``, sorted."""
    items: list[tuple[str, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            items.append((path.relative_to(root).as_posix(), path.stat().st_size))
    return sorted(items)


HASH_CACHE_DIR = "file-hash-cache"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hashes(root: Path, *, workers: int = 8) -> dict[str, tuple[int, str]]:
    """``{relative path: (size, sha256)}`` of every non-hidden file under ``root``. Hashes are
    cached on disk (``<GOOSE_SAM3_HOME>/file-hash-cache/``) by path, size and mtime, so only new
    or changed files are read again: a second pass over a GOOSE download costs its ``stat`` calls."""
    from concurrent.futures import ThreadPoolExecutor

    from goose_lib.io import atomic_write_json, read_json
    from goose_lib.paths import home

    store = home() / HASH_CACHE_DIR / f"{sha256_json(str(root))[:24]}.json"
    try:
        cached = read_json(store) if store.is_file() else {}
    except (OSError, ValueError):
        cached = {}
    stats: dict[str, tuple[int, int]] = {}

    def scan(folder: str, prefix: str) -> None:  # os.scandir + strings: ~10x faster than pathlib here
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                scan(e.path, f"{prefix}{e.name}/")
            elif e.is_file():
                st = e.stat()
                stats[prefix + e.name] = (st.st_size, st.st_mtime_ns)

    scan(str(root), "")
    todo = [rel for rel, (size, mtime) in stats.items()
            if not (rel in cached and cached[rel][0] == size and cached[rel][1] == mtime)]
    if todo:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for rel, digest in zip(todo, pool.map(lambda r: _file_sha256(root / r), todo)):
                cached[rel] = [stats[rel][0], stats[rel][1], digest]
        fresh = {rel: cached[rel] for rel in stats}
        try:
            atomic_write_json(store, fresh)
        except OSError:
            pass  # a read-only home only loses the cache
        cached = fresh
    return {rel: (stats[rel][0], cached[rel][2]) for rel in sorted(stats)}


def data_fingerprint(root: str | os.PathLike) -> dict[str, Any]:
    """Fingerprint of a dataset root by content: ``{"root", "files", "bytes", "sha256"}``, the
    hash over (relative file name, sha256 of its bytes) of every non-hidden file. File hashes are
    cached by path, size and mtime (:func:`content_hashes`): a changed byte, a renamed, added or
    removed file changes it; an unchanged tree is not read again."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root is not a folder")
    hashes = content_hashes(root)
    h = hashlib.sha256()
    for rel, (_, digest) in hashes.items():  # sorted by name
        h.update(f"{rel}\0{digest}\n".encode())
    return {"root": str(root), "files": len(hashes), "bytes": sum(size for size, _ in hashes.values()),
            "sha256": h.hexdigest()}


@lru_cache(maxsize=64)
def _tree_content_hash(root: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for rel, _, _ in stamp:
        h.update(rel.encode() + b"\0")
        with open(Path(root) / rel, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def checkpoint_hash(path: str | os.PathLike) -> str:
    """sha256 over the relative names and bytes of every file of a checkpoint folder (or of one
    file). Cached per process on (name, size, mtime) of each file."""
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint does not exist")
    if path.is_file():
        st = path.stat()
        return _tree_content_hash(str(path.parent), ((path.name, st.st_size, st.st_mtime_ns),))
    stamp = []
    for rel, size in _tree_listing(path):
        stamp.append((rel, size, (path / rel).stat().st_mtime_ns))
    return _tree_content_hash(str(path), tuple(stamp))


def _resolve(kind: str, value: str, base: Path) -> Path | None:
    """The file or folder an input value names (None: an untrained student, nothing to read)."""
    if kind == "data_root":
        from goose_lib.data.embedded import is_embedded, resolve_data_root

        if is_embedded(value):
            return resolve_data_root(value)
    elif kind == "sam3_checkpoint":
        from goose_lib.models.embedded import is_embedded, resolve_sam3_checkpoint

        if is_embedded(value):
            return resolve_sam3_checkpoint(value)
    elif value == UNTRAINED:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def input_fingerprints(params: Mapping[str, Any], base: str | os.PathLike = ".", *,
                       kinds: Mapping[str, InputKind]) -> dict[str, dict]:
    """Fingerprints of the inputs among ``params``: ``{"data": {name: data_fingerprint},
    "checkpoints": {name: sha256}}``. ``kinds``: which parameters are inputs, and of which kind
    (:func:`goose_lib.config.declared_inputs` of the run's parameter class). ``base`` is the folder
    relative paths are read from (the run folder). A named input that does not exist raises
    FileNotFoundError naming it."""
    base = Path(base)
    data: dict[str, Any] = {}
    ckpts: dict[str, str] = {}
    for name, kind in sorted(kinds.items()):
        value = params.get(name)
        if isinstance(value, (list, tuple)) and kind != "data_root":  # several checkpoints (an ensemble)
            for i, v in enumerate(value):
                member = _resolve(kind, str(v), base)
                if member is not None:
                    ckpts[f"{name}[{i}]"] = checkpoint_hash(member)
            continue
        if not isinstance(value, str) or not value:
            continue
        path = _resolve(kind, value, base)
        if path is None:
            continue
        if kind == "data_root":
            data[name] = data_fingerprint(path)
        else:
            ckpts[name] = checkpoint_hash(path)
    return {"data": data, "checkpoints": ckpts}


@lru_cache(maxsize=4)
def device_info(device: str = "auto") -> dict[str, Any]:
    """``{"device": resolved device, "name": GPU name or CPU model, "cpus": count}``."""
    from goose_lib.paths import resolve_device

    resolved = resolve_device(device)
    name = platform.processor() or platform.machine()
    if resolved.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(torch.device(resolved))
    return {"device": resolved, "name": name, "cpus": os.cpu_count()}


def warm_up() -> None:
    """Compute the per-process parts of provenance (device: imports torch, ~1-3 s; versions; code
    version) in a background thread, so the first run does not wait for them."""
    import threading

    def work() -> None:
        code_version()
        library_versions()
        device_info("auto")

    threading.Thread(target=work, name="goose-provenance-warm-up", daemon=True).start()


def collect(*, notebook: str, params: Mapping[str, Any], inputs: Mapping[str, Any], seed: Any,
            started: str, wall_s: float, key: str | None = None, device: Any = "auto") -> dict[str, Any]:
    """The provenance record of one run (JSON-ready); ``device`` is the run's device parameter
    (resolved here: "auto" -> cuda when available)."""
    return {
        "notebook": notebook,
        "key": key,
        "seed": seed,
        "params_sha256": params_hash(params),
        "code": code_version(),
        "inputs": dict(inputs),
        "libraries": library_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device_info(device if isinstance(device, str) else "auto"),
        "started": started,
        "wall_s": round(wall_s, 3),
    }


def write_record(path: str | os.PathLike, *, command: str, params: Mapping[str, Any],
                 kinds: Mapping[str, InputKind], seed: Any = None, device: Any = "auto", started: str,
                 wall_s: float, base: str | os.PathLike = ".") -> Path:
    """The provenance record of a command-line result (``goose train``, ``teacher``, ``evaluate``,
    ``predict``, ``submit``): the same fields as a notebook run's, ``notebook`` naming the command."""
    from goose_lib.io import atomic_write_json

    inputs = input_fingerprints(params, base, kinds=kinds)
    record = collect(notebook=command, params=params, inputs=inputs, seed=seed, started=started, wall_s=wall_s,
                     device=device)
    return atomic_write_json(Path(path), {**record, "params": dict(params)})
