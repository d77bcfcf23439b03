"""GPU memory estimate of training the full-size SAM3 student, without a GPU and without weights.

The full-size student (transformers' SAM3 vision config: 1008x1008 input, 32 layers, hidden 1024;
FPN decoder 256 wide, 64 classes; lower 24 layers frozen, as the paper) is built on the *meta*
device (shapes only, no memory) and one training forward pass + cross-entropy is traced there:
every tensor autograd saves for the backward pass is recorded (deduplicated by storage, the
weights themselves excluded) per part of the model. From that and the parameter counts:

- ``weights``: every parameter in fp32 (4 B); ``grads``: the trainable ones (4 B);
  ``adamw``: two fp32 moments per trainable parameter (8 B); ``ema``: an fp32 copy of all weights
  (only with ``ema > 0``, as recommended for real runs);
- ``autocast_weights``: bf16 copies of the weights autocast makes for the matmuls (2 B per
  parameter, an upper bound: held from the forward to the backward pass);
- ``activations``: the saved tensors of the traced pass, with the model in bf16 (what bf16 autocast
  stores for matmuls; its fp32 ops are counted at bf16 size, so this is a lower bound). Attention
  is traced as the GPU's fused (flash / memory-efficient) SDPA kernels store it: q, k, v, the
  output and the fp32 log-sum-exp, never the L x L weights (the meta device's math fallback would
  store them: +0.8 GiB per image for each global-attention layer);
- with gradient checkpointing each trainable ViT layer keeps only its input (the fp32 residual
  stream, B x 72 x 72 x 1024 x 4 B) and one layer at a time is recomputed: activations =
  inputs of all trainable layers + the largest layer's saved tensors + neck, decoder and loss.

``total`` = the sum, a floor for ``torch.cuda.max_memory_allocated`` (the allocator's
fragmentation and backward's transient buffers come on top: compare ``benchmarks/gpu_check.py``,
which measures it on a GPU). Prints a table and writes ``benchmarks/results/memory_estimate.json``.

    python benchmarks/memory_estimate.py [--batches 1 2 4] [--tiny] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from goose_lib.io import atomic_write_json
from goose_lib.models.student import StudentConfig, build_student

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 2**30


def vision_config(tiny: bool) -> Any:
    """The full-size SAM3 vision config (transformers' defaults), or the embedded tiny one at 112 px."""
    from transformers import Sam3VisionConfig, Sam3ViTConfig

    if not tiny:
        return Sam3VisionConfig(backbone_config=Sam3ViTConfig(), fpn_hidden_size=256)
    vit = Sam3ViTConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=6, num_attention_heads=4,
                        image_size=112, patch_size=14, window_size=8, global_attn_indexes=[2, 5],
                        pretrain_image_size=112)
    return Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=32)


class _FusedAttention(torch.autograd.Function):
    """Shapes-only stand-in for a fused SDPA kernel: saves what flash attention saves."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # never run: the trace has no backward
        raise NotImplementedError


def _fused_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return _FusedAttention.apply(query, key, value)


def saved_bytes(model: torch.nn.Module, batch: int, num_classes: int) -> dict[str, int]:
    """Bytes autograd saves for backward in one training pass (+ loss), per part: ``layer<i>``
    (trainable ViT layers), ``neck``, ``decoder``, ``rest`` (stem, upsampling, loss)."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: set[int] = set()
    parts: dict[str, int] = {}
    current = ["rest"]

    def tag(name: str) -> Any:
        def hook(module: Any, args: Any) -> None:
            current[0] = name
        return hook

    def back(module: Any, args: Any, out: Any) -> None:
        current[0] = "rest"

    hooks = []
    for i, layer in enumerate(model.encoder.backbone.layers):
        hooks += [layer.register_forward_pre_hook(tag(f"layer{i}")), layer.register_forward_hook(back)]
    for name, mod in [("neck", m) for m in model.encoder.neck.fpn_layers] + [("decoder", model.decoder)]:
        hooks += [mod.register_forward_pre_hook(tag(name)), mod.register_forward_hook(back)]

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        key = st._cdata
        if key not in params and key not in seen:
            seen.add(key)
            parts[current[0]] = parts.get(current[0], 0) + st.nbytes()
        return t

    size = model.image_size
    dtype = next(model.parameters()).dtype
    x = torch.zeros(batch, 3, size, size, device="meta", dtype=dtype)
    y = torch.zeros(batch, size, size, device="meta", dtype=torch.long)
    sdpa = F.scaled_dot_product_attention
    try:
        F.scaled_dot_product_attention = _fused_sdpa  # transformers looks it up at call time
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = model(x)
            current[0] = "rest"
            F.cross_entropy(logits.float(), y, ignore_index=255)
    finally:
        F.scaled_dot_product_attention = sdpa
        for h in hooks:
            h.remove()
    return parts


def estimate(batch: int, *, tiny: bool = False, frozen_layers: int | None = None, decoder_channels: int | None = None,
             num_classes: int = 64) -> dict[str, Any]:
    """Memory (bytes) of one training step at ``batch``, without and with gradient checkpointing."""
    vc = vision_config(tiny)
    layers = vc.backbone_config.num_hidden_layers
    frozen = frozen_layers if frozen_layers is not None else (2 if tiny else 24)
    channels = decoder_channels if decoder_channels is not None else (16 if tiny else 256)
    cfg = StudentConfig(sam3_checkpoint="(architecture only)", frozen_layers=frozen, decoder_channels=channels,
                        num_classes=num_classes)
    with torch.device("meta"):
        model = build_student(cfg, device="meta", vision_config=vc).to(torch.bfloat16).train()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    parts = saved_bytes(model, batch, num_classes)
    layer_bytes = [parts.get(f"layer{i}", 0) for i in range(frozen, layers)]
    head = parts.get("neck", 0) + parts.get("decoder", 0) + parts.get("rest", 0)
    g = vc.image_size // vc.backbone_config.patch_size
    residual = batch * g * g * vc.backbone_config.hidden_size * 4  # one fp32 layer input
    static = {"weights": 4 * total, "grads": 4 * trainable, "adamw": 8 * trainable, "autocast_weights": 2 * total}
    acts = {False: sum(layer_bytes) + head,
            True: residual * len(layer_bytes) + max(layer_bytes, default=0) + head}
    rows = []
    for ckpt in (False, True):
        row = {"batch": batch, "grad_checkpointing": ckpt, **{k: v / GIB for k, v in static.items()},
               "activations": acts[ckpt] / GIB}
        row["total"] = sum(static.values()) / GIB + row["activations"]
        row["total_with_ema"] = row["total"] + 4 * total / GIB
        rows.append(row)
    return {"params_total": total, "params_trainable": trainable, "frozen_layers": frozen, "layers": layers,
            "image_size": int(vc.image_size), "decoder_channels": channels,
            "per_layer_activations_gib": max(layer_bytes, default=0) / GIB, "head_activations_gib": head / GIB,
            "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--tiny", action="store_true", help="the tiny embedded encoder (a smoke test)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/results/memory_estimate.json)")
    args = ap.parse_args(argv)
    results = [estimate(b, tiny=args.tiny) for b in args.batches]
    first = results[0]
    print(f"student: {first['params_total'] / 1e6:.1f}M parameters, {first['params_trainable'] / 1e6:.1f}M trainable "
          f"({first['frozen_layers']} of {first['layers']} layers frozen), input {first['image_size']}px; GiB:")
    print(f"{'batch':>5} {'ckpt':>5} {'weights':>8} {'grads':>6} {'adamw':>6} {'ac.wts':>6} {'activ.':>7} "
          f"{'total':>7} {'+ema':>7}")
    for res in results:
        for r in res["rows"]:
            print(f"{r['batch']:>5} {'yes' if r['grad_checkpointing'] else 'no':>5} {r['weights']:>8.2f} "
                  f"{r['grads']:>6.2f} {r['adamw']:>6.2f} {r['autocast_weights']:>6.2f} {r['activations']:>7.2f} "
                  f"{r['total']:>7.2f} {r['total_with_ema']:>7.2f}")
    out = args.out or RESULTS / ("memory_estimate_tiny.json" if args.tiny else "memory_estimate.json")
    atomic_write_json(out, {"estimates": results, "method": "meta-device trace, see benchmarks/memory_estimate.py"})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
