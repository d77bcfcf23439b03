"""Student checkpoints: a self-contained folder, written atomically, loadable without SAM3.

Folder layout (``save_student``)::

    model.safetensors     the weights to use for inference (the EMA weights when EMA is on)
    vision_config.json    the encoder's transformers config (architecture; no SAM3 folder needed)
    run.json              {"format", "student": StudentConfig, "params": all run parameters,
                           + ``info`` (step, RNG states, metrics, ...)}
    train_state.pt        optional: what exact resume needs beyond run.json (optimizer, scheduler,
                           raw training weights when they differ from model.safetensors, EMA, ...)

The folder is written under a temporary sibling name and renamed into place, so a reader (or an
interrupted writer) never sees half a checkpoint. A training run keeps its checkpoints under
``<out_dir>/checkpoints/step_NNNNNNN`` and points at the newest complete one with ``latest.json``
(written atomically after the folder is complete).
"""

from __future__ import annotations

import base64
import math
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from goose_lib.config import ParameterError, to_dict, validate
from goose_lib.io import atomic_dir, atomic_write_json, read_json

FORMAT = "goose-student-v1"
WEIGHTS_FILE = "model.safetensors"
VISION_CONFIG_FILE = "vision_config.json"
RUN_FILE = "run.json"
STATE_FILE = "train_state.pt"
LATEST_FILE = "latest.json"


class CheckpointLoadError(ValueError):
    """A student checkpoint folder that cannot be loaded; the message starts with the path."""


def _tensors_for_file(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two tensors sharing memory (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, v in state.items():
        t = v.detach().to("cpu").contiguous()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if ident in seen:
            t = t.clone()
        seen.add(ident)
        out[k] = t
    return out


def _student_config_dict(student: torch.nn.Module) -> dict[str, Any]:
    cfg = getattr(student, "config", None)
    if cfg is None:
        raise TypeError("student has no .config (StudentConfig); build it with build_student")
    return to_dict(cfg)


def _vision_config_dict(student: torch.nn.Module) -> dict[str, Any]:
    vc = getattr(student, "vision_config", None)
    if vc is None:
        raise TypeError("student has no .vision_config (the encoder's transformers config)")
    return vc.to_dict() if hasattr(vc, "to_dict") else dict(vc)


def save_student(dir: str | os.PathLike, student: torch.nn.Module, *, params: Mapping[str, Any],
                 extra_state: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None,
                 weights: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write a student checkpoint folder at ``dir`` atomically (replacing one that exists).

    ``params``: every parameter of the run (JSON-ready); ``info``: more top-level run.json entries
    (step, RNG states, metrics); ``weights``: the state dict to save instead of the student's own
    (e.g. EMA weights); ``extra_state``: resume state saved to ``train_state.pt`` with
    ``torch.save`` (tensors, numbers, strings, lists and dicts only).
    """
    dir = Path(dir)
    with atomic_dir(dir) as tmp:
        state = weights if weights is not None else student.state_dict()
        save_file(_tensors_for_file(state), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        atomic_write_json(tmp / VISION_CONFIG_FILE, _vision_config_dict(student))
        run = {"format": FORMAT, "student": _student_config_dict(student), "params": dict(params),
               **dict(info or {})}
        atomic_write_json(tmp / RUN_FILE, run)
        if extra_state is not None:
            torch.save(dict(extra_state), tmp / STATE_FILE)
    return dir


def load_run(dir: str | os.PathLike) -> dict[str, Any]:
    """The ``run.json`` of a checkpoint folder (raises naming the folder when it is not one)."""
    path = Path(dir) / RUN_FILE
    if not path.is_file():
        raise CheckpointLoadError(f"{dir}: not a student checkpoint (no {RUN_FILE}); "
                                  "pass the folder written by train() / save_student()")
    run = read_json(path)
    if run.get("format") != FORMAT:
        raise CheckpointLoadError(f"{path}: unknown checkpoint format {run.get('format')!r}, expected {FORMAT!r}")
    return run


def load_student(dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the student saved in ``dir`` (strict: missing or unexpected keys raise).

    Needs no SAM3 folder: the architecture comes from ``vision_config.json`` and ``run.json``.
    """
    from transformers import Sam3VisionConfig

    from goose_lib.models.student import StudentConfig, build_student

    dir = Path(dir)
    run = load_run(dir)
    for name in (VISION_CONFIG_FILE, WEIGHTS_FILE):
        if not (dir / name).is_file():
            raise CheckpointLoadError(f"{dir}: incomplete student checkpoint, {name} is missing")
    try:
        cfg = validate(StudentConfig, run["student"])
    except (KeyError, ParameterError) as exc:
        raise CheckpointLoadError(f"{dir / RUN_FILE}: bad student configuration ({exc})") from exc
    vision_config = Sam3VisionConfig.from_dict(read_json(dir / VISION_CONFIG_FILE))
    student = build_student(cfg, device="cpu", vision_config=vision_config)
    state = load_file(str(dir / WEIGHTS_FILE))
    result = student.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointLoadError(
            f"{dir / WEIGHTS_FILE}: weights do not match the student architecture "
            f"(missing {result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]})")
    return student.to(device).eval()


def load_train_state(dir: str | os.PathLike) -> dict[str, Any]:
    """The resume state (``train_state.pt``) of a checkpoint folder, on the CPU."""
    path = Path(dir) / STATE_FILE
    if not path.is_file():
        raise CheckpointLoadError(f"{path}: missing; this checkpoint cannot resume training")
    return torch.load(path, map_location="cpu", weights_only=True)


# --- latest pointer ----------------------------------------------------------------------------

def write_latest(out_dir: str | os.PathLike, ckpt: str | os.PathLike, step: int) -> Path:
    """Point ``<out_dir>/latest.json`` at the complete checkpoint folder ``ckpt``."""
    out_dir = Path(out_dir)
    rel = os.path.relpath(Path(ckpt), out_dir)
    return atomic_write_json(out_dir / LATEST_FILE, {"checkpoint": rel, "step": int(step)})


def find_latest(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder of a run, or None when the run has none."""
    path = Path(out_dir) / LATEST_FILE
    if not path.is_file():
        return None
    ckpt = Path(out_dir) / read_json(path)["checkpoint"]
    if not (ckpt / RUN_FILE).is_file():
        raise CheckpointLoadError(f"{path}: points at {ckpt}, which is not a complete checkpoint; "
                                  "delete latest.json to start over")
    return ckpt


# --- best checkpoints by validation composite (ensembles) ---------------------------------------

BEST_DIR = "best"
BEST_FILE = "best.json"


def _score(v: Any) -> float:
    return float("-inf") if v is None or math.isnan(float(v)) else float(v)  # NaN / None rank last


def save_best(out_dir: str | os.PathLike, step: int, model: torch.nn.Module, *, params: Mapping[str, Any],
              composite: float | None, keep: int, info: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Keep ``model`` (the inference weights: EMA when on) as ``<out_dir>/best/step_N`` when its
    validation ``composite`` is among the ``keep`` best so far; ``best/best.json`` lists the kept ones,
    best first (``[{"step", "composite", "checkpoint"}]``, paths relative to ``out_dir``). Returns it."""
    out_dir = Path(out_dir)
    index = out_dir / BEST_DIR / BEST_FILE
    ranking = [r for r in (read_json(index) if index.is_file() else []) if r["step"] != int(step)]
    if keep < 1 or (len(ranking) >= keep and _score(composite) <= min(_score(r["composite"]) for r in ranking)):
        return ranking
    path = out_dir / BEST_DIR / f"step_{int(step):07d}"
    save_student(path, model, params=params, info={"step": int(step), "val_composite": composite, **dict(info or {})})
    ranking.append({"step": int(step), "composite": composite, "checkpoint": os.path.relpath(path, out_dir)})
    ranking.sort(key=lambda r: (-_score(r["composite"]), r["step"]))
    for old in ranking[keep:]:
        shutil.rmtree(out_dir / old["checkpoint"], ignore_errors=True)
    atomic_write_json(index, ranking[:keep])
    return ranking[:keep]


def best_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """The folders :func:`save_best` kept for a run, best first ([] when none)."""
    index = Path(out_dir) / BEST_DIR / BEST_FILE
    return [Path(out_dir) / r["checkpoint"] for r in read_json(index)] if index.is_file() else []


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
