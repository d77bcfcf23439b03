"""Ground-floor locations: the home of the embedded defaults, the source checkout, the device.

``GOOSE_SAM3_HOME`` overrides the default home (``~/.cache/goose-sam3``). Nothing is written
on import. The value ``"embedded"`` (:data:`EMBEDDED`) is resolved one floor up, once per kind:
data roots by :func:`goose_lib.data.embedded.resolve_data_root`, SAM3 checkpoints by
:func:`goose_lib.models.embedded.resolve_sam3_checkpoint`.
"""

from __future__ import annotations

import os
from pathlib import Path

EMBEDDED = "embedded"  # a data root / SAM3 checkpoint value: the embedded default of that kind
EMBEDDED_RANDOM = "embedded-random"  # a SAM3 checkpoint value: the embedded SAM3 with random weights (control)
UNTRAINED = "untrained"  # a student checkpoint value: an untrained student (a reference point, not a result)


def home() -> Path:
    """Folder holding the embedded dataset and checkpoint (not created here)."""
    env = os.environ.get("GOOSE_SAM3_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "goose-sam3"


def repo_root() -> Path:
    """The source checkout (for notebooks/, ablations/, reports/ defaults)."""
    return Path(__file__).resolve().parent.parent


def resolve_registered(value: str | os.PathLike, registry: dict[str, str], what: str, names: str) -> Path:
    """The mechanism behind each kind's resolver: a name of ``registry`` ({name: "module:function"},
    the function returning the folder, imported only when called) -> that folder; else ``value`` as
    a path, which must exist (the error names ``what`` and lists the registered ``names``)."""
    target = registry.get(str(value))
    if target is not None:
        import importlib

        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)()
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} does not exist ({names}: {', '.join(sorted(registry))})")
    return path


def resolve_device(device: str = "auto") -> str:
    """The one place that turns "auto" into a device string."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
