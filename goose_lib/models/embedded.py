"""The one resolver of SAM3 checkpoint values: a folder, or the name of an embedded checkpoint.

Embedded checkpoints: ``embedded`` is the foundation shipped in the package
(:mod:`goose_lib.models.foundation`, pre-trained offline by :mod:`goose_lib.models.pretrain`);
``embedded-random`` is the same tiny SAM3 randomly initialised (the premise-off control), built by
transformers' own classes and written on first use under ``goose_lib.paths.home()``.
:data:`EMBEDDED_SAM3` maps each name to the function that returns its folder (imported lazily). Everything above the models layer passes
``sam3_checkpoint`` values through unchanged; only this module turns them into folders, which
the strict loaders of :mod:`goose_lib.models.sam3` then read like any real checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

from goose_lib.paths import EMBEDDED, EMBEDDED_RANDOM, resolve_registered

# name -> "module:function" returning the checkpoint's folder (written on first use)
EMBEDDED_SAM3: dict[str, str] = {
    EMBEDDED: "goose_lib.models.foundation:shipped_foundation",  # the tiny SAM3 foundation (shipped)
    EMBEDDED_RANDOM: "goose_lib.models.tiny:ensure_tiny_checkpoint",  # the same, random (premise-off control)
}


def is_embedded(value: str | os.PathLike) -> bool:
    """Whether ``value`` names an embedded SAM3 checkpoint rather than a folder."""
    return str(value) in EMBEDDED_SAM3


def resolve_sam3_checkpoint(value: str | os.PathLike) -> Path:
    """An embedded checkpoint's name -> its folder (built on first use); else the folder, which must exist."""
    return resolve_registered(value, EMBEDDED_SAM3, "SAM3 checkpoint folder", "embedded checkpoints")
