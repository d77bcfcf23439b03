"""Student checkpoints: the folder format, its writer, and THE student loader (:func:`load_student`).

Folder layout (``save_student``)::

    model.safetensors     the weights to use for inference (the EMA weights when EMA is on)
    vision_config.json    the encoder's transformers config (architecture; no SAM3 folder needed)
    run.json              {"format", "student": StudentConfig, "params": all run parameters,
                           + ``info`` (step, RNG states, metrics, ...)}
    train_state.pt        optional: what exact resume needs beyond run.json (written by
                           :mod:`goose_lib.train.checkpoint`)

The folder is written under a temporary sibling name and renamed into place, so a reader (or an
interrupted writer) never sees half a checkpoint. A training run keeps its checkpoints under
``<run>/checkpoints/step_NNNNNNN`` and points at the newest complete one with ``latest.json``
(written atomically after the folder is complete).

:func:`load_student` is the one way to get a student for inference, analysis or the teacher
comparison: ``source`` is a student checkpoint folder, a training run folder (its newest
checkpoint), a notebook run folder of ``03_training`` (its ``training/`` run), or ``"untrained"``
(an UNTRAINED student: the encoder of ``sam3_checkpoint`` and a seeded random decoder, with the
architecture of :class:`goose_lib.models.config.StudentConfig`; a reference point, not a result).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from goose_lib.config import ParameterError, to_dict, validate
from goose_lib.io import atomic_dir, atomic_write_json, read_json
from goose_lib.models.config import StudentConfig
from goose_lib.models.weights import load_safetensors
from goose_lib.paths import EMBEDDED, UNTRAINED

FORMAT = "goose-student-v1"
WEIGHTS_FILE = "model.safetensors"
VISION_CONFIG_FILE = "vision_config.json"
RUN_FILE = "run.json"
STATE_FILE = "train_state.pt"  # written by goose_lib.train.checkpoint (resume state)
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
        hint = (" (a notebook run's record: its training wrote no checkpoint)"
                if run.get("format") is None and "notebook" in run else "")
        raise CheckpointLoadError(f"{path}: unknown checkpoint format {run.get('format')!r}, expected "
                                  f"{FORMAT!r}{hint}")
    return run


def _load_folder(dir: Path, device: str | torch.device) -> torch.nn.Module:
    """Rebuild the student saved in ``dir`` (strict: missing or unexpected keys raise).

    Needs no SAM3 folder: the architecture comes from ``vision_config.json`` and ``run.json``.
    """
    from transformers import Sam3VisionConfig

    from goose_lib.models.student import build_student

    run = load_run(dir)
    for name in (VISION_CONFIG_FILE, WEIGHTS_FILE):
        if not (dir / name).is_file():
            raise CheckpointLoadError(f"{dir}: incomplete student checkpoint, {name} is missing")
    try:
        student_cfg = dict(run["student"])
        if "checkpoint" in student_cfg:  # written before the field was named sam3_checkpoint
            student_cfg["sam3_checkpoint"] = student_cfg.pop("checkpoint")
        cfg = validate(StudentConfig, student_cfg)
    except (KeyError, ParameterError) as exc:
        raise CheckpointLoadError(f"{dir / RUN_FILE}: bad student configuration ({exc})") from exc
    vision_config = Sam3VisionConfig.from_dict(read_json(dir / VISION_CONFIG_FILE))
    student = build_student(cfg, device="cpu", vision_config=vision_config)
    state = load_safetensors(dir / WEIGHTS_FILE)
    result = student.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointLoadError(
            f"{dir / WEIGHTS_FILE}: weights do not match the student architecture "
            f"(missing {result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]})")
    return student.to(device).eval()


# --- latest pointer of a run folder ----------------------------------------------------------------------------

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


# --- the one loader ----------------------------------------------------------------------------

def resolve_student_folder(source: str | os.PathLike) -> Path:
    """The checkpoint folder ``source`` names: the newest checkpoint of a training run
    (``latest.json``) or of a ``03_training`` notebook run (``training/``), else itself when it has
    ``run.json`` (a checkpoint). Runs are looked at first because the ablation runner's record of a
    notebook run is a ``run.json`` too."""
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: student checkpoint folder does not exist")
    for run_dir in (path, path / "training"):
        latest = find_latest(run_dir)
        if latest is not None:
            return latest
    if (path / RUN_FILE).is_file():
        return path
    raise CheckpointLoadError(f"{path}: not a student checkpoint (no {RUN_FILE}), nor a training run folder "
                              f"with checkpoints ({LATEST_FILE}), nor a notebook run of 03_training "
                              f"(training/{LATEST_FILE}); pass the folder train() wrote")


def load_student(source: str | os.PathLike, *, sam3_checkpoint: str | os.PathLike = EMBEDDED,
                 device: str | torch.device = "cpu", seed: int = 0,
                 config: StudentConfig | None = None) -> torch.nn.Module:
    """The student named by ``source`` (see the module doc), in eval mode on ``device``.

    ``"untrained"``: built from ``config`` (default :class:`StudentConfig` with ``sam3_checkpoint``)
    with the decoder seeded by ``seed`` (global RNG state untouched). ``sam3_checkpoint``, ``seed``
    and ``config`` are ignored for a saved student. The result carries ``.description`` (what it is,
    e.g. to show beside its results) and ``.source`` (the folder, or ``"untrained"``).
    """
    from goose_lib.models.student import build_student

    if str(source) in (UNTRAINED, ""):
        cfg = config or StudentConfig(sam3_checkpoint=str(sam3_checkpoint))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            student = build_student(cfg, device=device)
        student.eval()
        student.description = (f"UNTRAINED student (encoder of {cfg.sam3_checkpoint}, random "
                               f"{cfg.decoder} decoder, seed {seed})")
        student.source = UNTRAINED
        return student
    folder = resolve_student_folder(source)
    student = _load_folder(folder, device)
    student.description = f"student checkpoint {folder}"
    student.source = str(folder)
    return student


def student_fingerprint(source: str | os.PathLike, *, sam3_checkpoint: str | os.PathLike = EMBEDDED,
                        seed: int = 0) -> str:
    """A stable id of the student :func:`load_student` returns for these arguments (for cache keys
    of teacher outputs prompted by its predictions): the hash of its weight file, or of the SAM3
    checkpoint + seed for an untrained student."""
    from goose_lib.io import sha256_file, sha256_json
    from goose_lib.models.sam3 import checkpoint_fingerprint

    if str(source) in (UNTRAINED, ""):
        return sha256_json({"untrained": checkpoint_fingerprint(sam3_checkpoint),
                            "seed": seed})
    folder = resolve_student_folder(source)
    return sha256_json({WEIGHTS_FILE: sha256_file(folder / WEIGHTS_FILE)})
