"""SAM3 adapter: strict loading of the vision encoder and the promptable tracker, checkpoint
fingerprints, a copy of a checkpoint with some tensors replaced, and SAM3 preprocessing, all on
transformers' own classes. Every function taking a checkpoint accepts a ``sam3_checkpoint`` value
(a folder or an embedded name, resolved by :mod:`goose_lib.models.embedded`); the embedded tiny
checkpoint itself is built by :mod:`goose_lib.models.tiny`.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from goose_lib import paths
from goose_lib.io import atomic_dir, atomic_write_json, read_json, sha256_file, sha256_json
from goose_lib.models import embedded
from goose_lib.models.sam3_keys import CheckpointError, match_vision_keys, tracker_key_problems
from goose_lib.models.sam3_keys import short as _short

__all__ = ["CheckpointError", "checkpoint_fingerprint", "describe", "file_shapes", "load_tracker",
           "load_vision_encoder", "preprocess", "read_vision_config", "save_tracker_copy"]


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

    path = embedded.resolve_sam3_checkpoint(path)
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


def file_shapes(files: list[Path]) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """``{key: (file, shape)}`` of safetensors files, from their headers (no tensor is read)."""
    from safetensors import safe_open

    out: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():  # noqa: SIM118 - safe_open is not a dict
                out[k] = (f, tuple(sf.get_slice(k).get_shape()))
    return out


def load_vision_encoder(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, image_size: int | None = None) -> Any:
    """Strictly load the SAM3 image encoder + FPN neck (``Sam3VisionModel``), in eval mode.

    ``image_size``: the input size the caller needs; a checkpoint built for another size raises
    :class:`CheckpointError` (SAM3's global attention layers only accept their configured size).
    """
    from safetensors import safe_open
    from transformers import Sam3VisionModel
    from transformers.initialization import no_init_weights

    path = embedded.resolve_sam3_checkpoint(path)
    config = read_vision_config(path)
    _check_image_size(path, config.image_size, image_size)
    keys = file_shapes(_weight_files(path))
    # Skip random initialisation (~10 s for the real 454M encoder on a CPU): every parameter and
    # persistent buffer is overwritten by the strict load below; the non-persistent ones (RoPE
    # frequencies, position ids) are computed in __init__. (transformers patches torch.nn.init
    # while the block runs, as its own from_pretrained does.)
    with no_init_weights():
        model = Sam3VisionModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _, selected = match_vision_keys(str(path), {k: s for k, (_, s) in keys.items()}, expected)
    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for k, file_key in selected.items():
        by_file.setdefault(keys[file_key][0], []).append(k)
    for f, ks in by_file.items():
        with safe_open(str(f), framework="pt") as sf:
            for k in ks:
                state[k] = sf.get_tensor(selected[k])
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def load_tracker(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, image_size: int | None = None) -> Any:
    """Strictly load SAM3's promptable segmenter (``Sam3TrackerModel``), in eval mode.

    Accepts the facebook/sam3 layout and ``Sam3TrackerModel.save_pretrained`` folders. Any
    missing, unexpected or mis-shaped key (transformers only warns) raises :class:`CheckpointError`.
    """
    from transformers import Sam3TrackerModel

    path = embedded.resolve_sam3_checkpoint(path)
    cfg = _read_config(path)
    if cfg.get("model_type") not in ("sam3_video", "sam3_tracker", "sam3_tracker_video"):
        raise CheckpointError(f"{path}: config.json has model_type {cfg.get('model_type')!r}; the tracker "
                              "needs a facebook/sam3 (sam3_video) or Sam3TrackerModel folder")
    files = _weight_files(path)
    try:
        # ignore_mismatched_sizes: report mis-shaped keys in ``info`` (raised below, by name)
        model, info = Sam3TrackerModel.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                                       ignore_mismatched_sizes=True, dtype=dtype)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot load the SAM3 tracker ({exc})") from exc
    # transformers' own report, and the same check on the file's key -> shape table (sam3_keys),
    # which the tests also run on the full-size facebook/sam3 key set
    own = tracker_key_problems({k: s for k, (_, s) in file_shapes(files).items()}, model)
    problems = {k: sorted(map(str, info.get(k) or [])) or own[k] for k in ("missing_keys", "unexpected_keys",
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
    path = embedded.resolve_sam3_checkpoint(path)
    return sha256_json({"config": _read_config(path),
                        "weights": {f.name: _cached_sha256(f) for f in _weight_files(path)}})


def save_tracker_copy(base: str | os.PathLike, tensors: dict[str, torch.Tensor], out: str | os.PathLike) -> Path:
    """Copy the checkpoint ``base`` to the folder ``out`` with ``tensors`` (tracker parameter name ->
    tensor) replaced in the file's own key layout, so :func:`load_tracker` loads it strictly and
    :func:`checkpoint_fingerprint` differs. Each name is matched to the one key of the weight file
    that equals it or ends with ``.<name>`` (among several, the one under ``tracker_model.``);
    written to a temporary folder, then renamed."""
    from safetensors.torch import load_file, save_file

    base, out = embedded.resolve_sam3_checkpoint(base), Path(out)
    files = sorted(base.glob("*.safetensors"))
    if len(files) != 1:
        raise CheckpointError(f"{base}: a copy with replaced tensors supports one model.safetensors file, "
                              f"found {[f.name for f in files]}")
    state = load_file(str(files[0]))
    for name, tensor in tensors.items():
        cands = [k for k in state if k == name or k.endswith("." + name)]
        if len(cands) > 1:
            cands = [k for k in cands if k.startswith("tracker_model.")] or cands
        if len(cands) != 1:
            raise CheckpointError(f"{files[0]}: cannot place tensor {name!r} (candidates {cands[:4]})")
        if tuple(state[cands[0]].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{files[0]}: key {cands[0]} has shape {tuple(state[cands[0]].shape)}, "
                                  f"replacement {name} {tuple(tensor.shape)}")
        state[cands[0]] = tensor.detach().to("cpu", state[cands[0]].dtype).contiguous()
    with atomic_dir(out) as tmp:
        for f in base.iterdir():
            if f.is_file() and f.suffix != ".safetensors":
                shutil.copy2(f, tmp / f.name)
        save_file(state, str(tmp / files[0].name), metadata={"format": "pt"})
    return out


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Summary of a checkpoint folder's vision encoder: image size, layers, hidden size, fingerprint."""
    path = embedded.resolve_sam3_checkpoint(path)
    vc = read_vision_config(path)
    bb = vc.backbone_config
    return {"path": str(path), "image_size": int(vc.image_size), "num_layers": int(bb.num_hidden_layers),
            "hidden_size": int(bb.hidden_size), "fpn_hidden_size": int(vc.fpn_hidden_size),
            "fingerprint": checkpoint_fingerprint(path)}

