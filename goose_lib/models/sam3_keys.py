"""Which weights of a SAM3 checkpoint the student and the teacher take, decided on key -> shape
mappings alone (no tensor is read), so the real ``facebook/sam3`` key set can be checked without
its weights (the tests build it with transformers' own classes on the meta device).

- :func:`match_vision_keys`: the vision encoder (``Sam3VisionModel``) keys of any accepted
  layout (see :mod:`goose_lib.models.sam3`), strictly: a missing, unexpected or mis-shaped key
  raises :class:`CheckpointError` naming them.
- :func:`tracker_key_problems`: the keys transformers' ``Sam3TrackerModel.from_pretrained``
  would load from a checkpoint, with transformers' own renaming rules (its conversion mapping and
  base-model prefix handling) and its list of keys to ignore; returns what would be missing,
  unexpected or mis-shaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

Shapes = Mapping[str, Sequence[int]]

ANCHOR = "backbone.embeddings.patch_embeddings.projection.weight"
# (layout name, [(prefix in the file, prefix in Sam3VisionModel)]); the first whose anchor exists wins.
LAYOUTS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("facebook/sam3", (("detector_model.vision_encoder.", ""),)),
    ("Sam3TrackerModel", (("tracker_model.detector_model.vision_encoder.", ""),
                          ("tracker_model.tracker_neck.", "neck."))),
    ("Sam3Model", (("vision_encoder.", ""),)),
    ("Sam3VisionModel", (("", ""),)),
)


class CheckpointError(ValueError):
    """A SAM3 checkpoint folder that cannot be loaded as asked (names the folder and the keys)."""


def short(keys: Sequence[str], n: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def select_vision_keys(where: str, keys: Any) -> tuple[str, dict[str, str]]:
    """The layout of a checkpoint's keys and ``{Sam3VisionModel key: key in the file}`` for every
    key under that layout's prefixes (before any check against the model)."""
    keys = list(keys)
    present = set(keys)
    for name, prefixes in LAYOUTS:
        if prefixes[0][0] + ANCHOR not in present:
            continue
        selected: dict[str, str] = {}
        for key in keys:
            for src, dst in prefixes:
                if key.startswith(src):
                    selected[dst + key[len(src):]] = key
                    break
        return name, selected
    raise CheckpointError(f"{where}: no SAM3 vision encoder weights found (looked for "
                          f"{[p[0][0] + ANCHOR for _, p in LAYOUTS]})")


def match_vision_keys(where: str, file_shapes: Shapes, expected: Shapes) -> tuple[str, dict[str, str]]:
    """Strict selection of the vision encoder's weights: ``(layout, {model key: file key})`` whose
    keys are exactly ``expected``'s and whose shapes equal them; otherwise :class:`CheckpointError`."""
    layout, selected = select_vision_keys(where, file_shapes)
    missing = sorted(set(expected) - set(selected))
    unexpected = sorted(selected[k] for k in set(selected) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where}: weights do not match the SAM3 vision encoder ({layout} layout): "
                              f"missing {len(missing)} key(s) [{short(missing)}]; "
                              f"unexpected {len(unexpected)} key(s) [{short(unexpected)}]")
    bad = [f"{selected[k]} {tuple(file_shapes[selected[k]])} != {tuple(expected[k])}"
           for k in selected if tuple(file_shapes[selected[k]]) != tuple(expected[k])]
    if bad:
        raise CheckpointError(f"{where}: mis-shaped weights for the SAM3 vision encoder: {short(bad)}")
    return layout, selected


def tracker_key_problems(file_shapes: Shapes, model: Any) -> dict[str, list[str]]:
    """What ``Sam3TrackerModel.from_pretrained`` would find wrong with a checkpoint of these keys.

    ``model``: a ``Sam3TrackerModel`` (build it on the meta device: only its state-dict keys and
    shapes are used). Returns ``{"missing_keys", "unexpected_keys", "mismatched_keys"}`` (lists;
    all empty = every tracker weight comes from the file with its shape).
    """
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ignore = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]
    found: dict[str, str] = {}
    unexpected, mismatched = [], []
    for key, shape in file_shapes.items():
        new, _ = rename_source_key(key, renamings, converters, model.base_model_prefix, expected)
        if new in expected:
            found[new] = key
            if tuple(shape) != expected[new]:
                mismatched.append(f"{key} {tuple(shape)} != {expected[new]}")
        elif not any(p.search(new) for p in ignore):
            unexpected.append(key)
    return {"missing_keys": sorted(set(expected) - set(found)), "unexpected_keys": sorted(unexpected),
            "mismatched_keys": sorted(mismatched)}
