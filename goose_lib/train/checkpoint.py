"""Training checkpoints: what exact resume needs on top of a student checkpoint folder.

The folder format, its writer and the student loader are :mod:`goose_lib.models.checkpoint`;
this module adds ``train_state.pt`` (optimizer, scheduler, raw weights under EMA), RNG states,
``<run>/checkpoints/step_N`` rotation and ``latest.json`` (:func:`save_training`), and restores
them (:func:`restore_training`).
"""

from __future__ import annotations

import base64
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from goose_lib.models.checkpoint import (
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointLoadError,
    load_run,
    save_student,
    write_latest,
)


def load_train_state(dir: str | os.PathLike) -> dict[str, Any]:
    """The resume state (``train_state.pt``) of a checkpoint folder, on the CPU."""
    path = Path(dir) / STATE_FILE
    if not path.is_file():
        raise CheckpointLoadError(f"{path}: missing; this checkpoint cannot resume training")
    return torch.load(path, map_location="cpu", weights_only=True)


# --- training checkpoints (resume) ------------------------------------------------------------

def save_training(out_dir: str | os.PathLike, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: Any, *, ema_model: torch.nn.Module | None, params: Mapping[str, Any],
                  info: Mapping[str, Any], keep: int = 2) -> Path:
    """Write ``<out_dir>/checkpoints/step_N`` (N = ``step``), point ``latest.json`` at it, and keep
    only the newest ``keep`` step folders. With EMA, ``model.safetensors`` holds the EMA weights and
    ``train_state.pt`` the raw trainable ones (frozen weights are identical in both)."""
    out_dir = Path(out_dir)
    extra: dict[str, Any] = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    if ema_model is not None:
        extra["model"] = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    path = out_dir / "checkpoints" / f"step_{step:07d}"
    save_student(path, model, params=params, extra_state=extra, info={"step": int(step), **dict(info)},
                 weights=ema_model.state_dict() if ema_model is not None else None)
    write_latest(out_dir, path, step)
    done = sorted(p for p in (out_dir / "checkpoints").glob("step_*") if p.is_dir() and p != path)
    for old in done[: max(len(done) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def restore_training(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, *, ema_model: torch.nn.Module | None, rank: int = 0) -> int:
    """Load what :func:`save_training` wrote into the given objects and restore this rank's RNG
    states; returns the step the checkpoint was taken at."""
    path = Path(path)
    run = load_run(path)
    extra = load_train_state(path)
    weights = load_file(str(path / WEIGHTS_FILE))
    model.load_state_dict(weights, strict=True)
    if ema_model is not None:
        ema_model.load_state_dict(weights, strict=True)
        raw = extra.get("model", {})
        named = dict(model.named_parameters())
        missing = [n for n, p in named.items() if p.requires_grad and n not in raw]
        if missing:
            raise CheckpointLoadError(f"{path / STATE_FILE}: raw training weights missing for {missing[:5]}")
        with torch.no_grad():
            for n, t in raw.items():
                named[n].copy_(t)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    rngs = run.get("rng") or []
    if rank < len(rngs):
        set_rng_state(rngs[rank])
    return int(run["step"])


# --- RNG states (JSON-ready) -------------------------------------------------------------------

def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state() -> dict[str, Any]:
    """Python, NumPy (legacy global) and torch (CPU + every CUDA device) RNG states, JSON-ready."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], np.asarray(npst[1], dtype=np.uint32), npst[2], npst[3], npst[4]))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])
