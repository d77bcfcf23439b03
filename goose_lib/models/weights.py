"""Safetensors weight files, checked before they are read: a truncated file, a pickle or zip
(``torch.save``) renamed to ``.safetensors``, or anything else that is not safetensors raises
:class:`WeightsFileError` naming the file and what is wrong, instead of a ``SafetensorError``
that names neither. Used by the SAM3 loaders and by student checkpoints alike.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``), then the
tensor bytes; the checks read the header only (a few kB even for the real SAM3).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


class WeightsFileError(ValueError):
    """A weight file that is not a complete safetensors file; the message starts with its path."""


def _looks_like(head: bytes) -> str:
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return " (it looks like a Python pickle, e.g. a pytorch_model.bin; convert it to safetensors)"
    if head[:4] == b"PK\x03\x04":
        return " (it looks like a zip archive, e.g. a torch.save file; convert it to safetensors)"
    return ""


def check_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed header of the safetensors file ``path``; :class:`WeightsFileError` when the file
    cannot be read, is not safetensors, or is shorter or longer than its header says."""
    path = Path(path)
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            if not 0 < n <= MAX_HEADER_BYTES:
                raise WeightsFileError(f"{path}: not a safetensors file ({size} bytes, no safetensors header)"
                                       + _looks_like(head))
            if n > size - 8:
                raise WeightsFileError(f"{path}: truncated safetensors file: its header alone needs {n + 8} bytes, "
                                       f"the file holds {size}; copy or download it again")
            raw = f.read(n)
    except PermissionError as exc:
        raise WeightsFileError(f"{path}: cannot read the weights: permission denied") from exc
    except OSError as exc:
        raise WeightsFileError(f"{path}: cannot read the weights ({exc.strerror or exc})") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise TypeError("the header is not a JSON object")
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
        raise WeightsFileError(f"{path}: not a safetensors file (unreadable header: {exc}){_looks_like(head)}") from exc
    data, need = size - 8 - n, max(ends, default=0)
    if data < need:
        raise WeightsFileError(f"{path}: truncated safetensors file: its header describes {need} bytes of tensor "
                               f"data, the file holds {data} ({100 * data / need:.0f}%); copy or download it again")
    if data > need:
        raise WeightsFileError(f"{path}: damaged safetensors file: {data - need} bytes beyond the {need} bytes "
                               "of tensor data its header describes; copy or download it again")
    return header


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """Every tensor of the safetensors file ``path`` (checked first, see :func:`check_safetensors`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_safetensors(path)
    try:
        return load_file(str(path), device=device)
    except SafetensorError as exc:  # a header that passed the checks but is still invalid
        raise WeightsFileError(f"{path}: invalid safetensors file ({exc})") from exc
