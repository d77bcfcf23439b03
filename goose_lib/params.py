"""Parameter sets of the notebooks, one frozen dataclass per notebook.

Each notebook's ``parameters`` cell holds literals only; the next cell calls
``validate_namespace(<Params>, globals())``. The ablation runner checks a spec's parameter
names against these classes before anything runs (see ``NOTEBOOK_PARAMS``).
"""

from __future__ import annotations

from dataclasses import dataclass

# Each notebook owner adds its dataclass below and registers it in NOTEBOOK_PARAMS.


@dataclass(frozen=True)
class ExplorationParams:
    """notebooks/01_data_exploration.ipynb"""

    data_root: str = "embedded"  # "embedded" or a GOOSE download
    split: str = "train"
    limit: int | None = None  # first N samples; None = whole split
    exclude_scenarios: tuple[str, ...] = ()
    workers: int = 0  # statistics processes; 0 = all cores
    gallery_classes: int = 8  # rarest classes shown in the gallery
    seed: int = 0


NOTEBOOK_PARAMS: dict[str, type] = {
    "01_data_exploration": ExplorationParams,
}
