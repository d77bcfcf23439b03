"""Provenance of a run: code version, seed, parameter hash, data and checkpoint fingerprints,
library versions, device and wall time, written next to the run as ``provenance.json``.

Which parameters name inputs is decided by name: ``data_root`` (or any name ending in
``_root``) is a dataset root; any name containing ``checkpoint`` is a checkpoint folder. The
sentinel ``"embedded"`` resolves through :mod:`goose_lib.paths` (written on first use); relative
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

from goose_lib.io import sha256_json
from goose_lib.paths import repo_root

LIBRARIES: tuple[str, ...] = (
    "goose-sam3", "torch", "transformers", "safetensors", "numpy", "pandas", "matplotlib",
    "papermill", "nbconvert", "nbclient", "ipykernel", "ipywidgets",
)
"""Distributions whose versions every provenance record lists (None when not installed)."""


def is_data_param(name: str) -> bool:
    """True for parameter names that hold a dataset root (``data_root``, ``*_root``)."""
    return name == "data_root" or name.endswith("_root")


def is_checkpoint_param(name: str) -> bool:
    """True for parameter names that hold a checkpoint folder (``*checkpoint*``)."""
    return "checkpoint" in name


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


@lru_cache(maxsize=32)
def _data_fingerprint(root: str) -> dict[str, Any]:
    listing = _tree_listing(Path(root))
    return {"root": root, "files": len(listing), "bytes": sum(s for _, s in listing),
            "sha256": sha256_json(listing)}


def data_fingerprint(root: str | os.PathLike) -> dict[str, Any]:
    """Fingerprint of a dataset root's split index: ``{"root", "files", "bytes", "sha256"}``,
    the hash over (relative file name, size) of every non-hidden file. Cheap (no file is
    read); a renamed, added, removed or resized file changes it."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root is not a folder")
    return _data_fingerprint(str(root))


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


def _resolve(name: str, value: str, base: Path) -> Path:
    from goose_lib import paths

    if paths.is_embedded(value):
        return paths.resolve_data_root(value) if is_data_param(name) else paths.resolve_checkpoint(value)
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def input_fingerprints(params: Mapping[str, Any], base: str | os.PathLike = ".") -> dict[str, dict]:
    """Fingerprints of the inputs named by ``params``: ``{"data": {name: data_fingerprint},
    "checkpoints": {name: sha256}}``. ``base`` is the folder relative paths are read from (the
    run folder). A named input that does not exist raises FileNotFoundError naming it."""
    base = Path(base)
    data: dict[str, Any] = {}
    ckpts: dict[str, str] = {}
    for name, value in sorted(params.items()):
        if not isinstance(value, str) or not value:
            continue
        if is_data_param(name):
            data[name] = data_fingerprint(_resolve(name, value, base))
        elif is_checkpoint_param(name):
            ckpts[name] = checkpoint_hash(_resolve(name, value, base))
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
