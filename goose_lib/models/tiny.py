"""The embedded tiny SAM3: a randomly initialised ``Sam3VideoModel`` (detector + tracker) in the
``facebook/sam3`` key layout, written by transformers' own classes and loaded by the same strict
code path (:mod:`goose_lib.models.sam3`) as the real checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from goose_lib import paths
from goose_lib.io import atomic_dir
from goose_lib.models.sam3 import CheckpointError

TINY_NAME = "tiny-sam3-v1"


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
