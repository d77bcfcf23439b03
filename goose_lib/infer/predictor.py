"""A student as a function ``image HxWx3 uint8 -> HxW uint8 class ids``, with what it is.

Code that needs a student's predictions without owning a model (the teacher comparison, boxes
prompted by predictions) takes a :class:`Predictor`; :func:`student_predictor` builds one from
anything :func:`goose_lib.models.checkpoint.load_student` accepts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from goose_lib.infer.config import DEFAULT_TTA, TTAConfig
from goose_lib.paths import EMBEDDED


@dataclass(frozen=True)
class Predictor:
    """A student as the teacher step sees it."""

    predict: Callable[[np.ndarray], np.ndarray]  # image HxWx3 uint8 -> HxW uint8 class ids
    label: str  # what it is (shown beside results; says UNTRAINED for an untrained student)
    id: str  # stable id of its weights (cache keys of prediction-prompted boxes)
    model: Any = None  # the torch module behind ``predict`` (for :meth:`offloaded`); None = nothing to move

    @contextlib.contextmanager
    def offloaded(self) -> Iterator[None]:
        """While inside: the student's weights on the CPU and its CUDA memory released, so that
        another model (the full-size teacher) has the GPU; afterwards back on their device."""
        params = next(self.model.parameters(), None) if self.model is not None else None
        if params is None or params.device.type == "cpu":
            yield
            return
        import torch

        device = params.device
        self.model.to("cpu")
        torch.cuda.empty_cache()
        try:
            yield
        finally:
            self.model.to(device)


def student_predictor(source: str | os.PathLike, *, sam3_checkpoint: str | os.PathLike = EMBEDDED,
                      tta: TTAConfig = DEFAULT_TTA, device: str = "auto", seed: int = 0) -> Predictor:
    """The :class:`Predictor` of the student ``source`` names (a checkpoint / run folder, or
    ``"untrained"`` on ``sam3_checkpoint`` with a decoder seeded by ``seed``) under ``tta``."""
    from goose_lib.infer.tta import predict
    from goose_lib.models.checkpoint import load_student, student_fingerprint
    from goose_lib.paths import resolve_device

    model = load_student(source, sam3_checkpoint=sam3_checkpoint, device=resolve_device(device), seed=seed)
    return Predictor(predict=lambda image: predict(model, image, tta), label=model.description,
                     id=student_fingerprint(source, sam3_checkpoint=sam3_checkpoint, seed=seed), model=model)
