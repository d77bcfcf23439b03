"""The parameters of a training run (:class:`TrainConfig`), torch-free so that the notebook's
parameter class and the ``goose train`` options can be built without importing the training stack
(``goose --help`` stays instant). The loop itself is :mod:`goose_lib.train.loop`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from goose_lib.config import DataConfig, input_param, validate
from goose_lib.models.config import DecoderName, StudentConfig

_STUDENT = StudentConfig()  # the student fields' defaults are StudentConfig's (written once)

if TYPE_CHECKING:
    from goose_lib.data.augment import GeometryConfig, PhotometricConfig


@dataclass(frozen=True)
class TrainConfig:
    """Every parameter of a training run.

    Defaults are sized for the embedded tiny model on 2 CPU cores (~1-1.5 minutes; its encoder is the
    pre-trained foundation, 4 of its 6 layers frozen). For the real SAM3 encoder on a GPU use e.g. ``frozen_layers=24``,
    ``decoder_channels=256``, ``crop_size=1008``, ``scale_range=(0.5, 2.0)``, ``lr=1e-4``,
    ``steps=40000``, ``batch_size=2`` x ``accumulation=4`` per GPU, ``ema=0.9995``, ``warmup_steps=1500``.
    """

    # data
    data_root: str = input_param("data_root", DataConfig().data_root)  # "embedded" or a GOOSE root
    train_split: str = "train"  # split trained on
    val_split: str = "val"  # labelled split validated on
    train_limit: int | None = None  # first N training samples; None = all
    val_limit: int | None = None  # first N validation samples; None = all
    exclude_scenarios: tuple[str, ...] = ()  # scenario folders left out of both splits
    # student (goose_lib.models.config.StudentConfig: same names, its defaults)
    sam3_checkpoint: str = input_param("sam3_checkpoint", _STUDENT.sam3_checkpoint)  # SAM3 folder or "embedded"
    decoder: DecoderName = _STUDENT.decoder  # "fpn" (the method's) | "upernet" (ablation)
    frozen_layers: int = _STUDENT.frozen_layers  # lower encoder layers frozen (tiny foundation: 4 of 6; real SAM3: 24 of 32)
    decoder_channels: int = _STUDENT.decoder_channels  # decoder width (real model: 256)
    dropout: float = _STUDENT.dropout  # dropout before the classifier
    grad_checkpointing: bool = _STUDENT.grad_checkpointing  # recompute trainable ViT layers in backward
    # augmentation (goose_lib.data.augment)
    photometric: Literal["off", "standard", "aggressive"] = "aggressive"  # distortion preset (standard = mmseg)
    brightness_delta: float | None = None  # None = the preset's value
    contrast_range: tuple[float, float] | None = None  # None = the preset's value
    saturation_range: tuple[float, float] | None = None  # None = the preset's value
    hue_delta: float | None = None  # OpenCV hue units (1 = 2 degrees)
    photometric_prob: float | None = None  # probability of each photometric step; None = the preset's
    scale_range: tuple[float, float] = (0.75, 1.5)  # real model: (0.5, 2.0)
    base_short_side: int = 0  # 0 = the image's own size
    crop_size: int = 0  # 0 = the model input size
    flip_prob: float = 0.5  # probability of a horizontal flip
    cat_max_ratio: float = 1.0  # < 1: re-draw crops dominated by one class (mmseg: 0.75)
    # optimisation
    batch_size: int = 4  # per process and micro-step
    accumulation: int = 1  # micro-steps per optimizer step
    steps: int = 200  # optimizer steps
    lr: float = 3e-3  # peak lr of the top layer and the decoder (real model: 1e-4)
    layer_decay: float = 0.9  # lr factor per encoder layer going down
    weight_decay: float = 0.05  # AdamW weight decay
    warmup_steps: int = 10  # linear warm-up steps
    poly_power: float = 1.0  # exponent of the poly lr decay
    min_lr_ratio: float = 0.0  # final lr as a fraction of the peak
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    # loss (goose_lib.train.losses); every option is off by default
    loss: Literal["ce", "ohem", "class_balanced"] = "ce"  # pixel loss: plain, hard pixels only, class-weighted
    ohem_thresh: float = 0.7  # ohem: keep pixels whose true-class probability is below this (mmseg: 0.7)
    ohem_min_kept: int = 100000  # ohem: ... or the this-many hardest labelled pixels of the batch (mmseg: 1e5)
    balance_power: float = 0.5  # class_balanced: class weight ~ pixel frequency ** -power (1 = inverse)
    category_loss_weight: float = 0.0  # coarse-category CE (log-sum-exp of the class logits) weight; 0 = off
    ema: float = 0.0  # EMA decay of the weights (e.g. 0.999); 0 = off
    repeat_threshold: float = 0.0  # LVIS repeat-factor threshold; 0 = uniform sampling
    copy_paste_classes: tuple[int, ...] = ()  # rare class ids pasted from other training images; () = off
    copy_paste_prob: float = 0.5  # copy-paste: chance that a drawn image receives pastes
    copy_paste_count: int = 1  # copy-paste: objects pasted into such an image
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    # bookkeeping
    val_interval: int = 50  # steps between validations; 0 = only at the end
    checkpoint_interval: int = 100  # steps between checkpoints (also written at the end)
    keep_checkpoints: int = 2  # newest step checkpoints kept
    keep_best: int = 0  # also keep the k best checkpoints by validation composite (in best/); 0 = off
    log_interval: int = 10  # steps between metrics.jsonl loss rows
    seed: int = 0  # seed of everything random in the run
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    num_workers: int = 0  # DataLoader worker processes
    # distillation (goose_lib.train.distill)
    distill_mode: Literal["off", "soft", "replace"] = "off"  # soft = extra loss, replace = labels
    distill_weight: float = 1.0  # weight of the soft distillation loss
    distill_protect: bool = True  # targets never overrule labels of undistilled classes
    distill_per: Literal["region", "labelled"] = "labelled"  # soft loss mean over all labelled | distilled pixels
    distill_classes: tuple[int, ...] = ()  # class ids; () = take them from distill_selection
    distill_selection: str = ""  # selection JSON of the teacher notebook ({"classes": [...]}); "" = none
    teacher_cache: str = ""  # teacher cache folder; "" = none

    def __post_init__(self) -> None:
        positive = ("batch_size", "accumulation", "steps", "keep_checkpoints", "log_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "val_interval", "checkpoint_interval", "num_workers", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 < self.layer_decay <= 1:
            raise ValueError("need lr > 0, weight_decay >= 0 and 0 < layer_decay <= 1")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if not 0 <= self.min_lr_ratio <= 1 or self.poly_power <= 0 or self.grad_clip < 0:
            raise ValueError("need 0 <= min_lr_ratio <= 1, poly_power > 0 and grad_clip >= 0")
        if self.distill_weight < 0 or any(not 0 <= c < 256 for c in self.distill_classes):
            raise ValueError("distill_weight must be >= 0 and distill_classes class ids")
        if not 0 < self.ohem_thresh <= 1 or self.ohem_min_kept < 1 or self.balance_power < 0:
            raise ValueError("need 0 < ohem_thresh <= 1, ohem_min_kept >= 1 and balance_power >= 0")
        if self.category_loss_weight < 0 or self.keep_best < 0:
            raise ValueError("category_loss_weight and keep_best must be >= 0")
        if not 0 <= self.copy_paste_prob <= 1 or self.copy_paste_count < 1 \
                or any(not 0 <= c < 255 for c in self.copy_paste_classes):
            raise ValueError("need 0 <= copy_paste_prob <= 1, copy_paste_count >= 1 and copy_paste_classes "
                             "class ids 0..254")
        self.geometry()  # validates the augmentation ranges too
        self.photometric_config()
        self.student_config()  # ... and the student's fields (frozen_layers, decoder_channels, ...)

    def student_config(self) -> StudentConfig:
        """The :class:`StudentConfig` of this run (the student fields, same names)."""
        return validate(StudentConfig, {name: getattr(self, name) for name in STUDENT_FIELDS})

    def geometry(self) -> GeometryConfig:
        from goose_lib.data.augment import GeometryConfig

        return GeometryConfig(scale_range=self.scale_range, base_short_side=self.base_short_side,
                              crop_size=self.crop_size, flip_prob=self.flip_prob, cat_max_ratio=self.cat_max_ratio)

    def photometric_config(self) -> PhotometricConfig:
        from goose_lib.data.augment import photometric_preset

        return photometric_preset(self.photometric, brightness_delta=self.brightness_delta,
                                  contrast_range=self.contrast_range, saturation_range=self.saturation_range,
                                  hue_delta=self.hue_delta, prob=self.photometric_prob)

    def data_config(self, limit: int | None) -> DataConfig:
        return DataConfig(data_root=self.data_root, exclude_scenarios=self.exclude_scenarios, limit=limit)


STUDENT_FIELDS = ("sam3_checkpoint", "decoder", "frozen_layers", "decoder_channels", "dropout", "grad_checkpointing")
