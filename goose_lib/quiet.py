"""Scoped silencing of known, harmless third-party noise at its source.

Each helper is a context manager that silences one named message (or progress bar) of one
library for the duration of a block and restores everything on exit; nothing here changes the
user's logging or warnings configuration for the rest of the session. Used where the project
has already checked what the message warns about (e.g. the strict SAM3 key check).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...], exact: bool) -> None:
        super().__init__()
        self.fragments, self.exact = fragments, exact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.exact:
            return message not in self.fragments
        return not any(f in message for f in self.fragments)


@contextmanager
def drop_log_messages(logger: str, *fragments: str, exact: bool = False) -> Iterator[None]:
    """Inside the block, drop the records of logger ``logger`` (exactly that logger, where the
    library logs them) whose message contains one of ``fragments`` (``exact``: is one of them);
    every other record passes."""
    target = logging.getLogger(logger)
    flt = _DropMessages(fragments, exact)
    target.addFilter(flt)
    try:
        yield
    finally:
        target.removeFilter(flt)


@contextmanager
def no_transformers_progress() -> Iterator[None]:
    """Inside the block, no transformers / huggingface_hub progress bars ("Loading weights");
    their previous on/off states are restored on exit."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    was_on, hub_was_off = hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
        if hub_was_off:
            disable_progress_bars()
        else:
            enable_progress_bars()
