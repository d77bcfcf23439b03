"""JupyterLab for the notebooks, one command for root and non-root users alike (containers and
cloud notebooks run as root, where a bare ``jupyter lab`` refuses to start): on localhost only,
with a token, ``--allow-root`` always passed (it only permits root; it changes nothing otherwise)."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path


def lab_command(root_dir: str | os.PathLike, *, port: int = 8888, token: str | None = None,
                extra: tuple[str, ...] = ()) -> tuple[list[str], str]:
    """(argv starting JupyterLab on 127.0.0.1:``port`` over ``root_dir``, the token it requires)."""
    token = token or secrets.token_hex(16)
    argv = [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={Path(root_dir)}",
            *extra]
    return argv, token
