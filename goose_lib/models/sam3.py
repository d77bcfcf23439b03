"""SAM3 adapter: strict loading of the vision encoder and the promptable tracker, the embedded
tiny checkpoint, checkpoint fingerprints and SAM3 preprocessing, all on transformers' own classes.

Checkpoint folders hold ``config.json`` and safetensors weights (``model.safetensors`` or a
sharded ``model.safetensors.index.json``). Accepted weight layouts for the vision encoder:

- ``facebook/sam3`` (a ``sam3_video`` config): ``detector_model.vision_encoder.{backbone,neck}.*``
  beside ``tracker_model.*`` and ``tracker_neck.*`` (ignored here: they belong to the tracker);
- ``Sam3TrackerModel.save_pretrained``: ``tracker_model.detector_model.vision_encoder.backbone.*``
  with the tracker's neck under ``tracker_model.tracker_neck.*``;
- ``Sam3Model.save_pretrained``: ``vision_encoder.*``;
- ``Sam3VisionModel.save_pretrained`` (vision only): ``backbone.*``, ``neck.*``.

Loading is strict: a missing, unexpected or mis-shaped key raises :class:`CheckpointError`
naming the folder and the keys. Nothing here downloads: folders are local paths.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from goose_lib import paths
from goose_lib.io import atomic_dir, atomic_write_json, read_json, sha256_file, sha256_json

TINY_NAME = "tiny-sam3-v1"
_ANCHOR = "backbone.embeddings.patch_embeddings.projection.weight"
# (layout name, [(prefix in the file, prefix in Sam3VisionModel)]); the first whose anchor exists wins.
_LAYOUTS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("facebook/sam3", (("detector_model.vision_encoder.", ""),)),
    ("Sam3TrackerModel", (("tracker_model.detector_model.vision_encoder.", ""),
                          ("tracker_model.tracker_neck.", "neck."))),
    ("Sam3Model", (("vision_encoder.", ""),)),
    ("Sam3VisionModel", (("", ""),)),
)


class CheckpointError(ValueError):
    """A SAM3 checkpoint folder that cannot be loaded as asked (names the folder and the keys)."""


# --- preprocessing -------------------------------------------------------------------------------

def preprocess(images: Any, size: int, *, device: str | torch.device = "cpu") -> torch.Tensor:
    """Images -> SAM3 input: float32 (B, 3, size, size) in [-1, 1] on ``device``.

    ``images``: an HxWx3 uint8 RGB array, a (B, H, W, 3) uint8 array, a list of HxWx3 uint8 arrays
    (sizes may differ), or a torch tensor (3, H, W) / (B, 3, H, W), uint8 or float in 0..255.
    As ``Sam3ImageProcessor``: stretched to size x size (no aspect ratio, no padding), bilinear
    with antialias (uint8 input is rounded back to integers after resizing, as torchvision does),
    scaled by 1/255 and normalised with mean = std = 0.5.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("preprocess: empty list of images")
        return torch.cat([preprocess(im, size, device=device) for im in images])
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
            raise ValueError(f"preprocess: expected HxWx3 or BxHxWx3 uint8 RGB, got {images.dtype} "
                             f"array of shape {images.shape}")
        # read-only arrays (e.g. views of decoded PNGs) are copied: torch warns on non-writable memory
        x = torch.from_numpy(np.require(images, requirements=("C", "W")))
        x = (x[None] if x.ndim == 3 else x).permute(0, 3, 1, 2)
    elif isinstance(images, torch.Tensor):
        x = images[None] if images.ndim == 3 else images
        if x.ndim != 4 or x.shape[1] != 3 or not (x.dtype == torch.uint8 or x.is_floating_point()):
            raise ValueError(f"preprocess: expected a (B,3,H,W) uint8 or float tensor, got {x.dtype} "
                             f"of shape {tuple(images.shape)}")
    else:
        raise TypeError(f"preprocess: unsupported image type {type(images).__name__}")
    if size < 1:
        raise ValueError(f"preprocess: size must be positive, got {size}")
    is_uint8 = x.dtype == torch.uint8
    x = x.to(device=device, dtype=torch.float32)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if is_uint8:
            x = x.round().clamp_(0, 255)
    return x / 127.5 - 1.0


# --- reading checkpoint folders ---------------------------------------------------------------------

def _read_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: no config.json; expected a SAM3 checkpoint folder "
                              "(facebook/sam3 layout or a transformers save_pretrained folder)")
    try:
        return read_json(cfg_file)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        files = [path / s for s in shards]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{path}: weight shards listed in {index.name} are missing: {missing}")
        return files
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json "
                          "(only safetensors weights are supported)")


def _vision_config_dict(path: Path, cfg: dict) -> dict:
    kind = cfg.get("model_type")
    if kind == "sam3_video":
        return cfg.get("detector_config", {}).get("vision_config") or {}
    if kind in ("sam3", "sam3_tracker", "sam3_tracker_video"):
        return cfg.get("vision_config") or {}
    if kind == "sam3_vision_model":
        return cfg
    raise CheckpointError(f"{path}: config.json has model_type {kind!r}; expected one of sam3_video "
                          "(facebook/sam3), sam3, sam3_tracker, sam3_tracker_video, sam3_vision_model")


def read_vision_config(path: str | os.PathLike) -> Any:
    """The ``Sam3VisionConfig`` of a checkpoint folder (no weights read)."""
    from transformers import Sam3VisionConfig

    path = Path(path)
    vc = _vision_config_dict(path, _read_config(path))
    if "backbone_config" not in vc:
        raise CheckpointError(f"{path}: config.json has no vision_config.backbone_config")
    try:
        return Sam3VisionConfig.from_dict(vc)
    except Exception as exc:  # transformers' strict dataclasses raise several types
        raise CheckpointError(f"{path}: invalid SAM3 vision config ({exc})") from exc


def _check_image_size(path: Path, actual: int, wanted: int | None) -> None:
    if wanted is not None and int(wanted) != int(actual):
        raise CheckpointError(f"{path}: checkpoint is for {actual}x{actual} input but {wanted}x{wanted} "
                              f"was asked; use image_size={actual} or a checkpoint built for {wanted}")


def _short(keys: Sequence[str], n: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _select_vision_weights(path: Path, files: list[Path]) -> tuple[str, dict[str, tuple[Path, str]]]:
    """Pick the key layout and map Sam3VisionModel key -> (file, key in file)."""
    from safetensors import safe_open

    keys: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            keys.update(dict.fromkeys(sf.keys(), f))
    for name, prefixes in _LAYOUTS:
        if prefixes[0][0] + _ANCHOR not in keys:
            continue
        selected: dict[str, tuple[Path, str]] = {}
        for key, file in keys.items():
            for src, dst in prefixes:
                if key.startswith(src):
                    selected[dst + key[len(src):]] = (file, key)
                    break
        return name, selected
    raise CheckpointError(f"{path}: no SAM3 vision encoder weights found (looked for "
                          f"{[p[0][0] + _ANCHOR for _, p in _LAYOUTS]})")


def load_vision_encoder(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, image_size: int | None = None) -> Any:
    """Strictly load the SAM3 image encoder + FPN neck (``Sam3VisionModel``), in eval mode.

    ``image_size``: the input size the caller needs; a checkpoint built for another size raises
    :class:`CheckpointError` (SAM3's global attention layers only accept their configured size).
    """
    from safetensors import safe_open
    from transformers import Sam3VisionModel
    from transformers.initialization import no_init_weights

    path = Path(path)
    config = read_vision_config(path)
    _check_image_size(path, config.image_size, image_size)
    layout, selected = _select_vision_weights(path, _weight_files(path))
    # Skip random initialisation (~10 s for the real 454M encoder on a CPU): every parameter and
    # persistent buffer is overwritten by the strict load below; the non-persistent ones (RoPE
    # frequencies, position ids) are computed in __init__. (transformers patches torch.nn.init
    # while the block runs, as its own from_pretrained does.)
    with no_init_weights():
        model = Sam3VisionModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(selected))
    unexpected = sorted(selected[k][1] for k in set(selected) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the SAM3 vision encoder ({layout} layout): "
                              f"missing {len(missing)} key(s) [{_short(missing)}]; "
                              f"unexpected {len(unexpected)} key(s) [{_short(unexpected)}]")
    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for k, (f, _) in selected.items():
        by_file.setdefault(f, []).append(k)
    for f, ks in by_file.items():
        with safe_open(str(f), framework="pt") as sf:
            for k in ks:
                state[k] = sf.get_tensor(selected[k][1])
    bad = [f"{selected[k][1]} {tuple(v.shape)} != {tuple(expected[k].shape)}"
           for k, v in state.items() if v.shape != expected[k].shape]
    if bad:
        raise CheckpointError(f"{path}: mis-shaped weights for the SAM3 vision encoder: {_short(bad)}")
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def load_tracker(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, image_size: int | None = None) -> Any:
    """Strictly load SAM3's promptable segmenter (``Sam3TrackerModel``), in eval mode.

    Accepts the facebook/sam3 layout and ``Sam3TrackerModel.save_pretrained`` folders. Any
    missing, unexpected or mis-shaped key (transformers only warns) raises :class:`CheckpointError`.
    """
    from transformers import Sam3TrackerModel

    path = Path(path)
    cfg = _read_config(path)
    if cfg.get("model_type") not in ("sam3_video", "sam3_tracker", "sam3_tracker_video"):
        raise CheckpointError(f"{path}: config.json has model_type {cfg.get('model_type')!r}; the tracker "
                              "needs a facebook/sam3 (sam3_video) or Sam3TrackerModel folder")
    _weight_files(path)
    try:
        # ignore_mismatched_sizes: report mis-shaped keys in ``info`` (raised below, by name)
        model, info = Sam3TrackerModel.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                                       ignore_mismatched_sizes=True, dtype=dtype)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot load the SAM3 tracker ({exc})") from exc
    problems = {k: sorted(map(str, info.get(k) or [])) for k in ("missing_keys", "unexpected_keys",
                                                                 "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems or info.get("error_msgs"):
        detail = "; ".join(f"{k.replace('_', ' ')} {len(v)} [{_short(v)}]" for k, v in problems.items())
        raise CheckpointError(f"{path}: weights do not match the SAM3 tracker: {detail} "
                              f"{info.get('error_msgs') or ''}".rstrip())
    _check_image_size(path, model.config.vision_config.image_size, image_size)
    return model.to(device=device, dtype=dtype).eval()


# --- fingerprints --------------------------------------------------------------------------------

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _cached_sha256(file: Path) -> str:
    """sha256 of a file, cached in memory and under paths.home() by (path, mtime, size)."""
    st = file.stat()
    key = (str(file.resolve()), st.st_mtime_ns, st.st_size)
    if key in _HASH_CACHE:
        return _HASH_CACHE[key]
    store = paths.home() / "fingerprint-cache.json"
    text_key = f"{key[0]}|{key[1]}|{key[2]}"
    try:
        disk = read_json(store) if store.is_file() else {}
    except ValueError:
        disk = {}
    digest = disk.get(text_key)
    if digest is None:
        digest = sha256_file(file)
        disk[text_key] = digest
        try:
            atomic_write_json(store, disk)
        except OSError:
            pass  # a read-only home only loses the cache
    _HASH_CACHE[key] = digest
    return digest


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over the folder's config.json (parsed) and the sha256 of each weight file."""
    path = Path(path)
    return sha256_json({"config": _read_config(path),
                        "weights": {f.name: _cached_sha256(f) for f in _weight_files(path)}})


# --- the embedded tiny checkpoint --------------------------------------------------------------------

def _tiny_video_config(image_size: int) -> Any:
    from transformers import (
        CLIPTextConfig,
        Sam3Config,
        Sam3TrackerVideoConfig,
        Sam3VideoConfig,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )

    patch, fpn = 14, 32
    if image_size % patch or image_size < 4 * patch:
        raise ValueError(f"tiny SAM3: image_size must be a multiple of {patch} and >= {4 * patch}, "
                         f"got {image_size}")
    g = image_size // patch

    def vision() -> Sam3VisionConfig:
        vit = Sam3ViTConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=6, num_attention_heads=4,
                            image_size=image_size, patch_size=patch, window_size=8, global_attn_indexes=[2, 5],
                            pretrain_image_size=image_size)
        return Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=fpn,
                                backbone_feature_sizes=[[4 * g, 4 * g], [2 * g, 2 * g], [g, g]])

    small = {"hidden_size": fpn, "num_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    text = CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, projection_dim=32,
                          num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1)
    detector = Sam3Config(vision_config=vision(), text_config=text, geometry_encoder_config=small,
                          detr_encoder_config=small, detr_decoder_config={**small, "num_queries": 8},
                          mask_decoder_config={"hidden_size": fpn, "num_attention_heads": 2})
    tracker = Sam3TrackerVideoConfig(
        vision_config=vision(), prompt_encoder_config={"hidden_size": fpn, "image_size": image_size, "patch_size": patch},
        mask_decoder_config={"hidden_size": fpn, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": fpn},
        memory_attention_hidden_size=fpn, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_encoder_hidden_size=fpn,
        memory_encoder_output_channels=16, mask_downsampler_embed_dim=fpn, memory_fuser_embed_dim=fpn,
        memory_fuser_intermediate_dim=64, image_size=image_size)
    return Sam3VideoConfig(detector_config=detector, tracker_config=tracker)


def build_tiny_checkpoint(out: str | os.PathLike, *, image_size: int = 224, seed: int = 0,
                          overwrite: bool = False) -> Path:
    """Write a tiny randomly initialised SAM3 (detector + tracker) in the facebook/sam3 layout.

    Built with transformers' ``Sam3VideoModel`` (ViT: hidden 64, 6 layers, 4 heads, window 8,
    global layers 2 and 5; FPN 32): ``config.json`` + ``model.safetensors`` of its in-memory
    state dict (not ``save_pretrained``, which writes ``tracker_model.tracker_model.*`` in 5.23).
    The folder is written next to ``out`` and renamed into place. Returns ``out``.
    """
    from safetensors.torch import save_file
    from transformers import Sam3VideoModel

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder exists and is not empty; remove it or pass overwrite=True")
    try:
        config = _tiny_video_config(image_size)
    except ValueError as exc:
        raise ValueError(f"{out}: {exc}") from exc
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3VideoModel(config)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_dir(out) as tmp:
        config.save_pretrained(tmp)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return out


def ensure_tiny_checkpoint() -> Path:
    """The embedded default checkpoint, ``paths.home()/"tiny-sam3-v1"``, written on first use.

    Safe against concurrent callers: each builds in its own temporary folder and renames it into
    place; a loser of the race discards its copy.
    """
    final = paths.home() / TINY_NAME
    if (final / "config.json").is_file() and (final / "model.safetensors").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{TINY_NAME}.build-"))
    try:
        build_tiny_checkpoint(tmp / TINY_NAME)
        try:
            os.rename(tmp / TINY_NAME, final)
        except OSError as exc:  # another caller won the race, or a stale folder is in the way
            if not (final / "model.safetensors").is_file():
                raise CheckpointError(f"{final}: incomplete embedded checkpoint folder; delete it to rebuild "
                                      "it") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


EMBEDDED_CHECKPOINTS = ("embedded", "embedded-teacher")


def resolve_embedded(name: str) -> Path:
    """A named embedded SAM3 checkpoint -> its folder, built on first use: "embedded" (tiny,
    random) or "embedded-teacher" (its tracker pre-trained on shapes, :mod:`.pretrain`)."""
    if name == "embedded":
        return ensure_tiny_checkpoint()
    if name == "embedded-teacher":
        from goose_lib.models.pretrain import ensure_teacher_checkpoint

        return ensure_teacher_checkpoint()
    raise CheckpointError(f"unknown embedded SAM3 checkpoint {name!r}; choose one of {list(EMBEDDED_CHECKPOINTS)}")


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Summary of a checkpoint folder's vision encoder: image size, layers, hidden size, fingerprint."""
    vc = read_vision_config(path)
    bb = vc.backbone_config
    return {"path": str(path), "image_size": int(vc.image_size), "num_layers": int(bb.num_hidden_layers),
            "hidden_size": int(bb.hidden_size), "fpn_hidden_size": int(vc.fpn_hidden_size),
            "fingerprint": checkpoint_fingerprint(path)}

