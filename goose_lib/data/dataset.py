"""The torch ``Dataset`` over a GOOSE split (decoding and validation live in ``decode``).

Items are :func:`load_sample` dicts: ``{"image": HxWx3 uint8, "label": HxW uint8 | None,
"instances": HxW int32 | None, "sample": Sample}``; the readers are :mod:`goose_lib.data.decode`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch.utils.data

from goose_lib.config import DataConfig
from goose_lib.data.decode import DataError, load_sample, missing_files
from goose_lib.data.layout import Sample, index_split
from goose_lib.ontology import Ontology


class GooseDataset(torch.utils.data.Dataset):
    """The samples of one split as a map-style torch ``Dataset`` of :func:`load_sample` dicts.

    ``root``: a GOOSE root or ``"embedded"`` (``None``: ``config.data_root``). With
    ``config.skip_bad`` samples with missing files are dropped when the dataset is built and
    samples that fail to decode are replaced by the next good one, each with a warning;
    ``skipped`` lists ``(key, reason)`` (per process when DataLoader workers are used).
    Without it every problem raises :class:`DataError`.
    """

    def __init__(self, root: str | os.PathLike | None, split: str, *, config: DataConfig | None = None,
                 transform: Callable[[dict[str, Any]], Any] | None = None) -> None:
        from goose_lib.data.embedded import resolve_data_root

        self.config = config or DataConfig()
        self.root = resolve_data_root(root if root is not None else self.config.data_root)
        self.split = split
        self.transform = transform
        self.ontology = Ontology.load(self.root)
        samples = index_split(self.root, split, cameras=self.config.cameras,
                              exclude_scenarios=self.config.exclude_scenarios, limit=self.config.limit)
        self.skipped: list[tuple[str, str]] = []
        if self.config.skip_bad:
            good = []
            for s in samples:
                problems = missing_files(s)
                if problems:
                    self.skipped.append((s.key, problems[0]))
                else:
                    good.append(s)
            if self.skipped:
                warnings.warn(f"{self.root}: skipped {len(self.skipped)} sample(s) of split {split!r} "
                              f"with missing files, e.g. {self.skipped[0][1]}", stacklevel=2)
            samples = good
        self.samples: list[Sample] = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Any:
        n = len(self.samples)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        for attempt in range(n):
            sample = self.samples[(i + attempt) % n]
            try:
                item = load_sample(sample, num_classes=self.ontology.num_classes)
                break
            except DataError as exc:
                if not self.config.skip_bad:
                    raise
                self.skipped.append((sample.key, str(exc)))
                warnings.warn(f"skipping bad sample: {exc}", stacklevel=2)
        else:
            raise DataError(f"{self.root}: every sample of split {self.split!r} failed to load")
        return self.transform(item) if self.transform is not None else item
