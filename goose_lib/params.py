"""Parameter sets of the notebooks, one frozen dataclass per notebook.

Each notebook's ``parameters`` cell holds literals only; the next cell calls
``validate_namespace(<Params>, globals())``. The ablation runner checks a spec's parameter
names against these classes before anything runs (see ``NOTEBOOK_PARAMS``).

Defaults are written once, in the component that uses them: every field that is also a field of
a component config (:class:`~goose_lib.config.DataConfig`, :class:`~goose_lib.infer.config.TTAConfig`,
the teacher's configs, :class:`~goose_lib.train.config.TrainConfig`) takes its default from there
(``tests/test_defaults.py`` checks every one, and the notebooks' literal cells against these).
Inputs (data roots, SAM3 and student checkpoints) are declared with
:func:`goose_lib.config.input_param`, which is how provenance knows what to fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from goose_lib.config import DataConfig, EvalProtocol, VoidProtocol, input_param
from goose_lib.infer.config import TTABlend, TTAConfig
from goose_lib.paths import EMBEDDED, EMBEDDED_RANDOM, UNTRAINED
from goose_lib.teacher.config import (
    TEACHER_KINDS,
    AdaptConfig,
    BoxParams,
    SelectionRule,
    TeacherConfig,
    TeacherKind,
)
from goose_lib.train.config import TrainConfig

_DATA, _TTA, _PROTOCOL = DataConfig(), TTAConfig(), EvalProtocol()
_BOXES, _TEACHER, _ADAPT, _RULE = BoxParams(), TeacherConfig(), AdaptConfig(), SelectionRule()


@dataclass(frozen=True)
class ExplorationParams:
    """notebooks/01_data_exploration.ipynb: statistics, plots and the explorer of one split."""

    data_root: str = input_param("data_root", _DATA.data_root)  # "embedded" or a GOOSE download
    split: str = "train"  # a labelled split (train / val)
    limit: int | None = _DATA.limit  # first N samples; None = whole split
    exclude_scenarios: tuple[str, ...] = _DATA.exclude_scenarios  # scenario folders left out (e.g. misaligned labels)
    skip_bad: bool = _DATA.skip_bad  # True: warn and skip unreadable samples instead of failing
    workers: int = 0  # statistics processes; 0 = all cores
    gallery_classes: int = 8  # rarest classes shown in the gallery
    gallery_per_class: int = 3  # crops per class in the gallery
    gallery_scan: int | None = 2000  # label maps scanned for gallery crops; None = all
    seed: int = 0  # order in which samples are scanned for the gallery
    explorer_max_side: int = 640  # longer side (pixels) of the explorer's picture
    progress: bool = True  # progress bars
    out_dir: str = "."  # figures are written here (relative to the run folder)

    def __post_init__(self) -> None:
        if self.split == "test":
            raise ValueError("split 'test' has no labels; explore 'train' or 'val'")
        self.data_config()  # limit
        for name in ("gallery_classes", "gallery_per_class", "explorer_max_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gallery_scan is not None and self.gallery_scan < 1:
            raise ValueError(f"gallery_scan must be >= 1 or None, got {self.gallery_scan}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")

    def data_config(self) -> DataConfig:
        return DataConfig(data_root=self.data_root, exclude_scenarios=self.exclude_scenarios, limit=self.limit,
                          skip_bad=self.skip_bad)


@dataclass(frozen=True)
class TrainingParams(TrainConfig):
    """notebooks/03_training.ipynb: every field of :class:`goose_lib.train.config.TrainConfig` (same
    names, defaults and validation: it is a subclass) plus where the notebook writes."""

    out_dir: str = "."  # run folder: metrics.jsonl, checkpoints/, figures
    progress: bool = True  # progress bars

    RESUME_DIRS: ClassVar[tuple[str, ...]] = ("training",)  # kept for an interrupted run to resume from


@dataclass(frozen=True)
class ErrorAnalysisParams:
    """notebooks/04_error_analysis.ipynb: evaluation with and without TTA, error analysis, submission."""

    checkpoint: str = input_param("checkpoint", UNTRAINED)  # student checkpoint / run folder; "untrained" = smoke test
    data_root: str = input_param("data_root", _DATA.data_root)  # "embedded" or a GOOSE download
    split: str = "val"  # labelled split to analyse
    limit: int | None = _DATA.limit  # first N samples; None = whole split
    exclude_scenarios: tuple[str, ...] = _DATA.exclude_scenarios  # scenario folders left out (e.g. misaligned labels)
    protocol: VoidProtocol = _PROTOCOL.void  # void handling of the metric
    scales: tuple[float, ...] = (0.75, 1.0, 1.25)  # multi-scale TTA scales (paper: 0.75 ... 1.5)
    flip: bool = _TTA.flip  # TTA also averages the mirrored image (doubles the windows)
    overlap: float = _TTA.overlap  # sliding-window overlap in [0, 1)
    window_batch: int = _TTA.window_batch  # windows per forward pass
    tta_base: Literal["stretch", "native"] = _TTA.base  # canvas at scale 1: model view or image size
    autocast: Literal["off", "bfloat16", "float16"] = _TTA.autocast  # mixed-precision forward passes (GPU)
    blend: TTABlend = _TTA.blend  # multiscale: overlapping windows averaged flat or Gaussian-weighted
    blend_sigma: float = _TTA.blend_sigma  # gaussian blend: sigma as a fraction of the window side
    ensemble_checkpoints: tuple[str, ...] = input_param("checkpoint", ())  # more students averaged with `checkpoint`
    ensemble_best: int = 0  # k > 0: use the k best checkpoints of `checkpoint`'s run (keep_best) instead of it
    ensemble_offload: bool = False  # ensemble: one member on the device at a time
    primary: Literal["single", "multiscale"] = "multiscale"  # mode recorded top-level and submitted
    boundary_bins: tuple[float, ...] = (1, 2, 4, 8, 16, 32)  # distance-to-boundary bin edges (px)
    worst_images: int = 4  # images shown in the worst-images figure
    confusion_classes: int = 30  # most frequent classes shown in the fine confusion heatmap
    submission_split: str = "test"  # split predicted for the submission zip; "" = no submission
    device: str = "auto"  # "auto", "cpu", "cuda"
    seed: int = 0  # seed of the untrained student's random decoder
    workers: int = 0  # decoding processes during evaluation (0 = in-process)
    browser_max_side: int = 900  # width of the error browser's picture
    progress: bool = True  # progress bars
    out_dir: str = "."  # evaluation tables, figures and the submission are written here

    def __post_init__(self) -> None:
        if self.split == "test":
            raise ValueError("split 'test' has no labels; analyse 'val' (or 'train')")
        self.data_config()  # limit
        self.modes()  # scales, overlap, window_batch, base, autocast, blend
        if self.ensemble_best < 0:
            raise ValueError(f"ensemble_best must be >= 0, got {self.ensemble_best}")
        for name in ("worst_images", "confusion_classes", "browser_max_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if list(self.boundary_bins) != sorted(set(self.boundary_bins)) or not self.boundary_bins:
            raise ValueError(f"boundary_bins must be strictly increasing, got {self.boundary_bins}")

    def data_config(self) -> DataConfig:
        return DataConfig(data_root=self.data_root, exclude_scenarios=self.exclude_scenarios, limit=self.limit)

    def modes(self) -> dict[str, TTAConfig]:
        """{"single": the baseline, "multiscale": the TTA of these parameters}."""
        common = {"flip": self.flip, "window_batch": self.window_batch, "autocast": self.autocast}
        return {"single": TTAConfig(**common),
                "multiscale": TTAConfig(mode="multiscale", scales=self.scales, overlap=self.overlap,
                                        base=self.tta_base, blend=self.blend, blend_sigma=self.blend_sigma,
                                        **common)}


@dataclass(frozen=True)
class TeacherParams:
    """notebooks/02_teacher_comparison.ipynb: SAM3 oracle-box teacher vs student, class selection.
    ``teacher="oracle"``: the control whose masks are the exact training labels (teacher.oracle)."""

    teacher: TeacherKind = "sam3"  # "sam3": SAM3's box-prompted masks; "oracle": the exact labels' (a control)
    sam3_checkpoint: str = input_param("sam3_checkpoint", EMBEDDED)  # SAM3 folder (facebook/sam3 layout) or "embedded"
    checkpoint: str = input_param("checkpoint", UNTRAINED)  # student checkpoint / run folder; "untrained" = labelled so
    data_root: str = input_param("data_root", _DATA.data_root)  # "embedded" or a GOOSE download
    train_split: str = "train"  # split cached for distillation (and used for adaptation)
    compare_split: str = "train"  # labelled split the classes are selected on (never the reported val)
    compare_holdout: float = 0.25  # selection on this fraction of compare_split's scenarios; 0 = all
    holdout_seed: int = 0  # which scenarios are held out (fixed across the runs' seeds)
    train_limit: int | None = None  # first N training samples cached; None = all
    compare_limit: int | None = None  # first N comparison samples; None = all
    exclude_scenarios: tuple[str, ...] = _DATA.exclude_scenarios  # scenario folders left out of every step
    cache_dir: str = ""  # teacher cache root; "" = <GOOSE_SAM3_HOME>/teacher-cache (keyed, shared)
    min_area: int = _BOXES.min_area  # boxes: objects below this many pixels get no box
    box_margin: float = _BOXES.margin  # boxes: widen by this fraction of the box size per side
    box_margin_px: int = _BOXES.margin_px  # boxes: ... plus this many pixels
    max_boxes: int | None = _BOXES.max_boxes  # boxes: keep the largest N objects per image; None = all
    use_instances: bool = _BOXES.use_instances  # boxes: one per instance id where the class has instances
    multimask: bool = _TEACHER.multimask  # teacher: 3 candidates per box, keep the best predicted IoU
    mask_threshold: float = _TEACHER.mask_threshold  # teacher: probability for a pixel to take the box's class
    tie_margin: float = _TEACHER.tie_margin  # teacher ("max_prob"): two classes within this of each other -> none
    overlap: Literal["smallest_box", "max_prob"] = _TEACHER.overlap  # teacher: who wins where boxes overlap
    no_memory_level: Literal["original", "transformers"] = _TEACHER.no_memory_level  # where no_memory_embedding goes
    box_batch: int = _TEACHER.box_batch  # teacher: boxes decoded per call
    adapt_steps: int = -1  # teacher adaptation steps; -1 = auto (150 for "embedded-random", else 0 = off)
    adapt_lr: float = _ADAPT.lr  # adaptation learning rate
    adapt_images_per_step: int = _ADAPT.images_per_step  # adaptation images per step
    criterion: Literal["distill", "box"] = _RULE.criterion  # selection: simulated composite change | in-box IoU
    margin: float = _RULE.margin  # selection: the gain must be more than this
    min_pixels: int = _RULE.min_pixels  # selection: ground-truth pixels of the class inside its boxes
    min_images: int = _RULE.min_images  # selection: images with a box of the class
    max_classes: int | None = _RULE.max_classes  # selection: keep the N largest gains; None = all
    gallery_classes: int = 4  # classes shown in the gallery (the selected ones with most support)
    gallery_rows: int = 3  # images in the gallery
    device: str = "auto"  # "auto", "cpu", "cuda"
    seed: int = _ADAPT.seed  # adaptation seed and the untrained student's decoder seed
    progress: bool = True  # progress bars
    out_dir: str = "."  # comparison table, selection.json and figures go here

    def __post_init__(self) -> None:
        if self.teacher not in TEACHER_KINDS:
            raise ValueError(f"teacher must be one of {TEACHER_KINDS}, got {self.teacher!r}")
        if self.adapt_steps < -1:
            raise ValueError(f"adapt_steps must be -1 (auto) or >= 0, got {self.adapt_steps}")
        if self.teacher == "oracle" and self.adapt_steps > 0:
            raise ValueError("adapt_steps: the oracle teacher has no decoder to adapt; use -1 or 0")
        if self.compare_split == "test":
            raise ValueError("compare_split 'test' has no labels; compare on 'train' (held-out scenarios) or 'val'")
        if not 0 <= self.compare_holdout < 1:
            raise ValueError(f"compare_holdout must be in [0, 1), got {self.compare_holdout}")
        self.box_params(), self.teacher_config(), self.adapt_config(), self.selection_rule()  # validate

    def box_params(self) -> BoxParams:
        return BoxParams(min_area=self.min_area, margin=self.box_margin, margin_px=self.box_margin_px,
                         max_boxes=self.max_boxes, use_instances=self.use_instances)

    def teacher_config(self) -> TeacherConfig:
        return TeacherConfig(multimask=self.multimask, mask_threshold=self.mask_threshold,
                             tie_margin=self.tie_margin, overlap=self.overlap, no_memory_level=self.no_memory_level,
                             box_batch=self.box_batch)

    def adapt_config(self) -> AdaptConfig:
        auto = 150 if self.sam3_checkpoint == EMBEDDED_RANDOM and self.teacher == "sam3" else 0
        steps = self.adapt_steps if self.adapt_steps >= 0 else auto
        return AdaptConfig(steps=steps, lr=self.adapt_lr, images_per_step=self.adapt_images_per_step,
                           limit=self.train_limit, seed=self.seed, no_memory_level=self.no_memory_level)

    def selection_rule(self) -> SelectionRule:
        return SelectionRule(criterion=self.criterion, margin=self.margin, min_pixels=self.min_pixels,
                             min_images=self.min_images, max_classes=self.max_classes)


NOTEBOOK_PARAMS: dict[str, type] = {
    "01_data_exploration": ExplorationParams,
    "02_teacher_comparison": TeacherParams,
    "03_training": TrainingParams,
    "04_error_analysis": ErrorAnalysisParams,
}
