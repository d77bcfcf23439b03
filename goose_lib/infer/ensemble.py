"""Checkpoint ensembles: the class probabilities of several students, each computed with the same
TTA (:mod:`goose_lib.infer.tta`), averaged with equal weights.

:class:`Ensemble` is an ``nn.Module`` holding the members; :func:`goose_lib.infer.tta.predict` /
``predict_probs`` (and so ``evaluate``, ``write_predictions``, ``write_submission``) accept it in place
of a model: each member's probabilities are computed at the first member's working resolution and
averaged there, then resized once. Memory: with ``offload=True`` the members wait on the CPU and
only one is on the device at a time (moved there for its share of each image, then back); without
it every member stays on ``device``. An ensemble of one member is that member, exactly.

Checkpoints are loaded through :func:`load_members` only (with ``models.checkpoint.load_student``); :func:`resolve_members` turns notebook/CLI parameters into the list of folders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .tta import DEFAULT_TTA, TTAConfig, _low_res_probs, _resize


class Ensemble(nn.Module):
    """Equal-weight average of the members' TTA probabilities (see the module docstring)."""

    def __init__(self, members: Sequence[nn.Module], *, device: str | torch.device = "cpu",
                 offload: bool = False) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        sizes = {int(m.image_size) for m in members}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members take different input sizes {sorted(sizes)}; they must agree")
        self.members = nn.ModuleList(members)
        self.image_size = sizes.pop()
        self.device = torch.device(device)
        self.offload = offload
        self.members.to("cpu" if offload else self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - use predict / predict_probs
        raise TypeError("an Ensemble averages probabilities under a TTAConfig: call tta.predict(ensemble, image, cfg)")

    @torch.no_grad()
    def low_res_probs(self, image: np.ndarray | torch.Tensor, cfg: TTAConfig,
                      shared: dict | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Averaged probabilities (1, C, h, w) at the first member's working resolution, and (H, W)."""
        total: torch.Tensor | None = None
        hw: tuple[int, int] = (0, 0)
        for i, member in enumerate(self.members):
            if self.offload:
                member.to(self.device)
            try:
                own = None if shared is None else shared.setdefault(("member", i), {})
                probs, hw = _low_res_probs(member, image, cfg, own)
            finally:
                if self.offload:
                    member.to("cpu")
            probs = probs.to(self.device)
            if total is None:
                total = probs.clone()
            else:
                total += _resize(probs, tuple(total.shape[-2:]))
        assert total is not None
        return total / len(self.members), hw


@torch.no_grad()
def ensemble_probs(models: Sequence[nn.Module], image: np.ndarray | torch.Tensor, cfg: TTAConfig = DEFAULT_TTA,
                   *, device: str | torch.device | None = None, offload: bool = False) -> torch.Tensor:
    """(C, H, W) float32: the mean over ``models`` of their TTA probabilities for one HxWx3 uint8 image.

    ``device``: where the models run (default: the first model's); ``offload``: keep only one model
    on the device at a time. The models are left where they were found."""
    where = [next(m.parameters()).device if any(True for _ in m.parameters()) else torch.device("cpu")
             for m in models]
    try:
        ens = Ensemble(models, device=device or where[0], offload=offload)
        low, hw = ens.low_res_probs(image, cfg)
        return _resize(low, hw)[0]
    finally:
        for m, d in zip(models, where):
            m.to(d)


def resolve_members(checkpoint: str, extra: Sequence[str] = (), best: int = 0) -> list[str]:
    """The checkpoint folders of an ensemble: ``checkpoint`` (or, with ``best`` = k > 0, the k best
    checkpoints its training run kept by validation composite, ``keep_best``) plus ``extra``.

    With ``best``, ``checkpoint`` may be a training run folder, a ``03_training`` notebook run
    (``<run>/training``) or a checkpoint folder of the run (``<run>/checkpoints/step_N``)."""
    if best <= 0:
        return [checkpoint, *extra]
    from goose_lib.models.checkpoint import BEST_DIR, BEST_FILE, best_checkpoints, resolve_student_folder

    path = Path(checkpoint).expanduser()
    run = next((r for r in (path, path / "training") if (r / BEST_DIR / BEST_FILE).is_file()), None)
    if run is None:
        run = resolve_student_folder(path).parent.parent
    kept = best_checkpoints(run)
    if not kept:
        raise FileNotFoundError(f"{path}: no best checkpoints kept in {run / BEST_DIR} (train with keep_best > 0)")
    return [str(p) for p in kept[:best]] + list(extra)


def load_members(checkpoints: Sequence[str | os.PathLike], *, device: str | torch.device = "cpu",
                 offload: bool = False, **kw: Any) -> nn.Module:
    """One student when one checkpoint is given (``models.checkpoint.load_student``'s result,
    unchanged), else an :class:`Ensemble` of them (each loaded on the CPU first when ``offload``).
    ``kw`` goes to ``load_student`` (``seed``, ``sam3_checkpoint`` for an untrained member). The
    result carries ``.description`` and ``.source`` (a list for an ensemble), as ``load_student``'s."""
    from goose_lib.models.checkpoint import load_student

    if len(checkpoints) == 1:
        return load_student(checkpoints[0], device=device, **kw)
    loaded = [load_student(c, device="cpu" if offload else device, **kw) for c in checkpoints]
    ens = Ensemble(loaded, device=device, offload=offload)
    ens.description = f"ensemble of {len(loaded)} ({'; '.join(m.description for m in loaded)})"
    ens.source = [m.source for m in loaded]
    return ens
