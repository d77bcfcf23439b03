"""Where the embedded defaults live, and the one place that resolves the sentinel "embedded".

``GOOSE_SAM3_HOME`` overrides the default home (``~/.cache/goose-sam3``). Nothing is written
on import; the ``ensure_*`` functions create the embedded dataset / checkpoint on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

EMBEDDED = "embedded"


def home() -> Path:
    """Folder holding the embedded dataset and checkpoint (not created here)."""
    env = os.environ.get("GOOSE_SAM3_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "goose-sam3"


def repo_root() -> Path:
    """The source checkout (for notebooks/, ablations/, reports/ defaults)."""
    return Path(__file__).resolve().parent.parent


def is_embedded(value: str | os.PathLike) -> bool:
    """``"embedded"`` or a named embedded variant (``"embedded-..."``, e.g. "embedded-basic")."""
    return str(value) == EMBEDDED or str(value).startswith(EMBEDDED + "-")


def resolve_data_root(value: str | os.PathLike) -> Path:
    """``"embedded"`` / ``"embedded-<name>"`` -> that embedded world (written on first use; see
    ``goose_lib.data.world.resolve_world``); else the path."""
    if is_embedded(value):
        from goose_lib.data.world import resolve_world

        return resolve_world(str(value))
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: data root does not exist")
    return path


def resolve_checkpoint(value: str | os.PathLike) -> Path:
    """``"embedded"`` -> the tiny random SAM3 checkpoint, ``"embedded-teacher"`` -> it pre-trained
    class-agnostically (both written on first use; ``goose_lib.models.sam3.resolve_embedded``);
    else the path."""
    if is_embedded(value):
        from goose_lib.models.sam3 import resolve_embedded

        return resolve_embedded(str(value))
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: SAM3 checkpoint folder does not exist")
    return path


def resolve_device(device: str = "auto") -> str:
    """The one place that turns "auto" into a device string."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
