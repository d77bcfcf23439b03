"""The shipped foundation: the tiny SAM3 pre-trained by :mod:`goose_lib.models.pretrain`,
committed in the package as a ``facebook/sam3``-layout folder (``config.json`` +
``model.safetensors``) with its model card (``card.json``, rendered to ``MODEL_CARD.md``).

``sam3_checkpoint: embedded`` resolves to :data:`FOUNDATION_DIR` (no build step); the random
tiny SAM3 stays available as ``embedded-random`` (:mod:`goose_lib.models.tiny`), the
premise-off control. The folder is read by the same strict loaders as ``facebook/sam3``.

:func:`write_foundation` maps the pre-trained modules into the file's own key layout: the shared
backbone -> ``detector_model.vision_encoder.backbone.*`` (which both loaders read), the detector
neck -> ``detector_model.vision_encoder.neck.*``, the tracker's neck -> ``tracker_neck.*``, the
rest of the tracker -> ``tracker_model.*``; every other tensor (the detector's text / DETR parts,
the tracker's memory modules) is the random base's, untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from goose_lib.io import atomic_dir, atomic_write_json, atomic_write_text, read_json, sha256_file

FOUNDATION_NAME = "tiny-sam3-foundation-v1"
FOUNDATION_DIR = Path(__file__).resolve().parent / "foundation" / FOUNDATION_NAME
CARD = "card.json"
CORPUS_FINGERPRINT_IMAGES = 4  # corpus images whose pixels and regions the card fingerprints


def shipped_foundation() -> Path:
    """The committed foundation folder (the ``embedded`` SAM3 checkpoint)."""
    if not (FOUNDATION_DIR / "model.safetensors").is_file():
        from goose_lib.models.sam3 import CheckpointError

        raise CheckpointError(f"{FOUNDATION_DIR}: the shipped foundation weights are missing (a checkout "
                              "without its committed files?); `embedded-random` is the random tiny SAM3")
    return FOUNDATION_DIR


def corpus_fingerprint(n: int = CORPUS_FINGERPRINT_IMAGES) -> str:
    """sha256 over the first ``n`` training-corpus samples (pixels, regions, boxes, concepts)."""
    import hashlib

    from goose_lib.data.corpus import corpus_sample

    h = hashlib.sha256()
    for i in range(n):
        s = corpus_sample(0, i)
        for a in (s.image, s.masks, s.boxes, s.concepts):
            h.update(a.tobytes())
    return h.hexdigest()


def foundation_state(trainer: Any, base_file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The base checkpoint's tensors with the pre-trained ones put in place (see module doc)."""
    from goose_lib.models.weights import load_safetensors

    state = load_safetensors(Path(base_file))
    new: dict[str, torch.Tensor] = {}
    for k, v in trainer.tracker.state_dict().items():
        if k.startswith("vision_encoder.backbone."):
            new["detector_model." + k] = v
        elif k.startswith("vision_encoder.neck."):
            new["tracker_neck." + k[len("vision_encoder.neck."):]] = v
        else:
            new["tracker_model." + k] = v
    for k, v in trainer.detector_neck.state_dict().items():
        new["detector_model.vision_encoder.neck." + k] = v
    unknown = sorted(k for k in new if k not in state)
    if unknown:
        raise KeyError(f"{base_file}: pre-trained tensors with no place in the base layout: {unknown[:5]}")
    for k, v in new.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"{base_file}: {k} has shape {tuple(state[k].shape)}, pre-trained {tuple(v.shape)}")
        state[k] = v.detach().to(state[k].dtype).contiguous().clone()
    return state


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_foundation(trainer: Any, out: str | os.PathLike, *, base: str | os.PathLike,
                     held_out: dict[str, Any], concepts: dict[str, Any], seconds: float | None = None) -> Path:
    """Write the pre-trained checkpoint folder ``out`` (config.json, model.safetensors, card.json,
    MODEL_CARD.md, loss_curve.png), atomically."""
    from safetensors.torch import save_file

    from goose_lib.data.corpus import CONCEPTS, CORPUS_SEED, KIND_CONCEPTS
    from goose_lib.models.pretrain import RECIPE_VERSION

    base = Path(base)
    state = foundation_state(trainer, base / "model.safetensors")
    r = trainer.recipe
    with atomic_dir(out) as tmp:
        shutil.copy2(base / "config.json", tmp / "config.json")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        card = {
            "name": FOUNDATION_NAME, "recipe_version": RECIPE_VERSION, "recipe": asdict(r),
            "recipe_hash": trainer.recipe_hash, "steps_done": trainer.step_index,
            "corpus": {"training_seed": CORPUS_SEED + 0, "held_out_seed": CORPUS_SEED + 1,
                       "training_images": r.n_images, "fingerprint": corpus_fingerprint(),
                       "fingerprint_images": CORPUS_FINGERPRINT_IMAGES, "concepts": list(CONCEPTS),
                       "kind_concepts": KIND_CONCEPTS},
            "base": {"name": base.name, "sha256": sha256_file(base / "model.safetensors")},
            "losses": trainer.losses, "held_out": {"promptable": held_out, "concepts": concepts},
            "commit": _commit(), "wall_seconds": seconds, "threads": r.threads,
            "sha256": sha256_file(tmp / "model.safetensors"),
        }
        atomic_write_json(tmp / CARD, card)
        _loss_plot(card, tmp / "loss_curve.png")
        atomic_write_text(tmp / "MODEL_CARD.md", render_card(card))
    return Path(out)


def _loss_plot(card: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    for key in ("mask", "concept"):
        y = np.array([rec[key] for rec in card["losses"]])
        k = max(1, len(y) // 100)
        ax.plot(np.arange(len(y))[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), label=key)
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (running mean of {max(1, len(card['losses']) // 100)})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_card(card: dict[str, Any]) -> str:
    """MODEL_CARD.md from card.json (every number comes from the card)."""
    r, p, c = card["recipe"], card["held_out"]["promptable"], card["held_out"]["concepts"]
    lines = [
        f"# {card['name']}: the embedded SAM3 foundation", "",
        ("The tiny SAM3 (facebook/sam3 layout) pre-trained once, offline, by `goose foundation` "
         "(`goose_lib/models/pretrain.py`) on the foundation corpus (`goose_lib/data/corpus.py`). "
         "Generated from `card.json`; do not edit by hand."), "",
        "| | |", "| --- | --- |",
        f"| recipe | `{card['recipe_version']}`, hash `{card['recipe_hash'][:16]}` |",
        (f"| steps | {card['steps_done']} x {r['images_per_step']} images x {r['prompts_per_image']} prompts "
         f"({r['point_share']:.0%} points) |"),
        (f"| corpus | training seed {card['corpus']['training_seed']} ({r['n_images']} images), held-out seed "
         f"{card['corpus']['held_out_seed']}; fingerprint `{card['corpus']['fingerprint'][:16]}` |"),
        f"| base | `{card['base']['name']}` (random init), sha256 `{card['base']['sha256'][:16]}` |",
        f"| commit | `{card['commit']}` |",
        (f"| wall time | {card['wall_seconds']:.0f} s on {card['threads']} threads |" if card["wall_seconds"]
         else f"| wall time | not recorded by the run ({card['threads']} threads) |"),
        f"| model.safetensors sha256 | `{card['sha256']}` |", "",
        f"## Held-out (corpus seed {p['corpus_seed']}, {p['images']} images, {p['boxes']} boxes)", "",
        "| measure | value |", "| --- | --- |",
        f"| tracker in-box mIoU (box prompt, best-scored mask) | {p['teacher']:.3f} |",
        f"| filling the box | {p['box_fill']:.3f} |",
        f"| concept mIoU (detector encoder + 1x1 head) | {c['mean']:.3f} |", "",
        "By region size (pixels of the 224-px model frame):", "",
        "| region area | boxes | tracker | filling the box |", "| --- | --- | --- | --- |",
        *[f"| {b['min_area']}-{b['max_area'] if b['max_area'] is not None else ''} | {b['boxes']} | "
          f"{b['teacher']:.3f} | {b['box_fill']:.3f} |" for b in p.get("by_size", [])], "",
        "Per concept: " + ", ".join(f"{k} {c['per_concept'][k]:.2f}" for k in card["corpus"]["concepts"]
                                    if k in c["per_concept"]), "",
        "## Loss", "", "![loss curve](loss_curve.png)", "",
        (f"First step: mask {card['losses'][0]['mask']:.4f}, concept {card['losses'][0]['concept']:.4f}; "
         f"last: mask {card['losses'][-1]['mask']:.4f}, concept {card['losses'][-1]['concept']:.4f}."), "",
    ]
    return "\n".join(lines)


def read_card(folder: str | os.PathLike = FOUNDATION_DIR) -> dict[str, Any]:
    return read_json(Path(folder) / CARD)
