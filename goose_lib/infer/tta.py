"""Image-level multi-scale / sliding-window / flip inference for a fixed-input-size model.

The model takes float (B, 3, S, S) in [-1, 1] (``model.image_size == S``) and returns logits
(B, C, S, S). Two modes (:class:`TTAConfig`):

- ``"single"`` (the baseline): the whole image is stretched to S x S (exactly
  :func:`goose_lib.models.sam3.preprocess`), one forward pass, softmax, probabilities resized
  (bilinear) to the image's resolution. ``flip`` adds the mirrored image (2 passes).
- ``"multiscale"``: for each scale ``s`` the image is resized to a *canvas* — ``base="stretch"``:
  ``round(s*S) x round(s*S)`` (the model's own stretched view, zoomed), ``base="native"``:
  ``round(s*H) x round(s*W)`` (the image's own resolution, zoomed). The canvas is covered by
  S x S windows (a sliding window with ``overlap`` where the canvas is larger than S, the last
  window aligned with the far edge; zero padding — mid-grey after normalisation — where it is
  smaller). Overlapping window logits are averaged (flat, or weighted by a Gaussian centred on
  each window with ``blend="gaussian"``, which trusts window centres over their borders), softmax
  gives the scale's probabilities,
  which are averaged over scales (and the mirrored canvases with ``flip``) at a working
  resolution (the image's, capped at the largest canvas) and resized once to the image's.
  With ``scales=(1.0,)``, ``base="stretch"`` the canvas is S x S: one window, no padding, the
  same result as ``"single"``.

Memory: windows go through the model ``window_batch`` at a time; besides them, one canvas of
C x canvas pixels (float32) and C x working-resolution probabilities are held.
:func:`predict_probs` returns C x H x W; :func:`predict` (the label map) never builds it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from goose_lib.infer.config import DEFAULT_TTA, CanvasBase, TTABlend, TTAConfig, TTAMode  # noqa: F401


def window_starts(length: int, size: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``size`` covering ``length`` (one at 0 when length <= size)."""
    if length <= size:
        return [0]
    stride = max(1, math.ceil(size * (1.0 - overlap)))
    n = math.ceil((length - size) / stride) + 1
    return [min(i * stride, length - size) for i in range(n)]


def canvas_size(height: int, width: int, input_size: int, scale: float, base: CanvasBase) -> tuple[int, int]:
    """(h, w) of the canvas the image is resized to at ``scale``."""
    if base == "stretch":
        side = max(1, round(scale * input_size))
        return side, side
    return max(1, round(scale * height)), max(1, round(scale * width))


def count_windows(height: int, width: int, input_size: int, cfg: TTAConfig) -> int:
    """Number of S x S windows (forward-pass images) :func:`predict_probs` runs for one image."""
    views = 2 if cfg.flip else 1
    if cfg.mode == "single":
        return views
    total = 0
    for s in cfg.scales:
        ch, cw = canvas_size(height, width, input_size, s, cfg.base)
        total += len(window_starts(ch, input_size, cfg.overlap)) * len(window_starts(cw, input_size, cfg.overlap))
    return total * views


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _image_tensor(image: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 array (or (3,H,W) uint8 tensor) -> float (1, 3, H, W) in 0..255 on ``device``."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} array of shape {image.shape}")
        arr = np.ascontiguousarray(image)
        x = torch.from_numpy(arr if arr.flags.writeable else arr.copy()).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3 and image.dtype == torch.uint8:
        x = image
    else:
        raise ValueError("expected an HxWx3 uint8 array or a (3, H, W) uint8 tensor")
    return x.to(device=device, dtype=torch.float32)[None]


def _resize_normalise(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1,3,H,W) float 0..255 -> (1,3,h,w) in [-1, 1]; resampling as ``sam3.preprocess``."""
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp_(0, 255)
    return x / 127.5 - 1.0


def _resize(p: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(p.shape[-2:]) == size:
        return p
    return F.interpolate(p, size=size, mode="bilinear", align_corners=False)


def _forward(model: torch.nn.Module, batch: torch.Tensor, cfg: TTAConfig) -> torch.Tensor:
    """Model logits as float32; under autocast only inside this call when ``cfg.autocast`` is set."""
    if cfg.autocast == "off":
        out = model(batch)
    else:
        with torch.autocast(batch.device.type, dtype=getattr(torch, cfg.autocast)):
            out = model(batch)
    if out.ndim != 4 or out.shape[0] != batch.shape[0] or tuple(out.shape[-2:]) != tuple(batch.shape[-2:]):
        raise ValueError(f"model returned shape {tuple(out.shape)} for input {tuple(batch.shape)}; "
                         f"expected (B, C, S, S) logits")
    return out.float()


def window_weights(size: int, cfg: TTAConfig, device: torch.device | None = None) -> torch.Tensor:
    """(S, S) weight of each window pixel in the average: ones (``flat``), or a Gaussian centred on
    the window with standard deviation ``blend_sigma * S`` per axis (``gaussian``; inf sigma = ones)."""
    if cfg.blend == "flat":
        return torch.ones((size, size), device=device)
    centre = torch.arange(size, device=device, dtype=torch.float64) + 0.5 - size / 2
    g = torch.exp(-0.5 * (centre / (cfg.blend_sigma * size)) ** 2)
    return (g[:, None] * g[None, :]).float()


def _canvas_logits(model: torch.nn.Module, canvas: torch.Tensor, size: int, cfg: TTAConfig) -> torch.Tensor:
    """Weighted average (:func:`window_weights`) of overlapping window logits over a (1,3,h,w)
    normalised canvas -> (1,C,h,w)."""
    _, _, h, w = canvas.shape
    boxes = [(y, x) for y in window_starts(h, size, cfg.overlap) for x in window_starts(w, size, cfg.overlap)]
    if len(boxes) == 1:  # one window: pad to S x S if needed, crop the logits back
        if (h, w) == (size, size):
            return _forward(model, canvas, cfg)
        return _forward(model, F.pad(canvas, (0, size - w, 0, size - h)), cfg)[:, :, :h, :w]
    acc: torch.Tensor | None = None
    count = torch.zeros((1, 1, h, w), device=canvas.device)
    weight = window_weights(size, cfg, canvas.device)
    for i in range(0, len(boxes), cfg.window_batch):
        chunk = boxes[i:i + cfg.window_batch]
        batch = torch.zeros((len(chunk), 3, size, size), device=canvas.device)  # 0 = mid-grey padding
        for j, (y, x) in enumerate(chunk):
            crop = canvas[0, :, y:y + size, x:x + size]
            batch[j, :, :crop.shape[1], :crop.shape[2]] = crop
        logits = _forward(model, batch, cfg)
        if acc is None:
            acc = torch.zeros((1, logits.shape[1], h, w), device=canvas.device)
        for j, (y, x) in enumerate(chunk):
            hh, ww = min(size, h - y), min(size, w - x)
            wj = weight[:hh, :ww]
            acc[0, :, y:y + hh, x:x + ww] += logits[j, :, :hh, :ww] * wj
            count[0, :, y:y + hh, x:x + ww] += wj
    assert acc is not None
    return acc.div_(count)


def _low_res_probs(model: torch.nn.Module, image: np.ndarray | torch.Tensor, cfg: TTAConfig,
                   shared: dict[tuple[bool, str], torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, tuple[int, int]]:
    """Averaged probabilities (1, C, h, w) at the working resolution, and the image's (H, W).

    ``shared``: {(flip, autocast): probabilities of the stretched S x S view}; that view (single mode, and
    scale 1 of multiscale with base "stretch") is one identical forward pass in every mode, so
    modes predicting the same image with one ``shared`` dict run it once. A model with its own
    ``low_res_probs`` (an :class:`~goose_lib.infer.ensemble.Ensemble`) computes them itself.
    """
    if hasattr(model, "low_res_probs"):
        return model.low_res_probs(image, cfg, shared)
    size = int(model.image_size)
    device = _model_device(model)
    x = _image_tensor(image, device)
    height, width = int(x.shape[-2]), int(x.shape[-1])
    views = [False, True] if cfg.flip else [False]
    if cfg.mode == "single":
        canvases = [(size, size)]
    else:
        canvases = [canvas_size(height, width, size, s, cfg.base) for s in cfg.scales]
    work = (min(height, max(c[0] for c in canvases)), min(width, max(c[1] for c in canvases)))
    total: torch.Tensor | None = None
    for canvas_hw in canvases:
        for flip in views:
            key = (flip, cfg.autocast)
            if shared is not None and canvas_hw == (size, size) and key in shared:
                probs = shared[key]
            else:
                canvas = _resize_normalise(x.flip(-1) if flip else x, canvas_hw)
                if cfg.mode == "single":
                    logits = _forward(model, canvas, cfg)
                else:
                    logits = _canvas_logits(model, canvas, size, cfg)
                # softmax over the contiguous last dim of an (N, h, w, C) copy (~10x torch's strided
                # softmax over dim 1), kept channels-last: (h, w, C) views later need no copy
                probs = logits.permute(0, 2, 3, 1).contiguous().softmax(-1).permute(0, 3, 1, 2)
                if shared is not None and canvas_hw == (size, size):
                    shared[key] = probs
            probs = _resize(probs.flip(-1) if flip else probs, work)
            total = probs.clone() if total is None else total.add_(probs)
    assert total is not None
    return total / (len(canvases) * len(views)), (height, width)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, image: np.ndarray | torch.Tensor, cfg: TTAConfig = DEFAULT_TTA
                  ) -> torch.Tensor:
    """Class probabilities (C, H, W) float32 on the model's device for an HxWx3 uint8 RGB image."""
    low, hw = _low_res_probs(model, image, cfg)
    return _resize(low, hw)[0]


def _source_index(out_len: int, in_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear (align_corners=False) source indices i0, i1 and weight of i1 for each output index."""
    src = ((torch.arange(out_len, device=device, dtype=torch.float32) + 0.5) * (in_len / out_len) - 0.5)
    src = src.clamp_(min=0)
    i0 = src.floor().long().clamp_(max=in_len - 1)
    i1 = (i0 + 1).clamp_(max=in_len - 1)
    return i0, i1, src - i0


def _argmax_last(x: torch.Tensor) -> torch.Tensor:
    """argmax over the last (contiguous) dimension; numpy's SIMD argmax on CPU (~5x torch's)."""
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return torch.from_numpy(x.numpy().argmax(-1))
    return x.argmax(-1)


def _runs(index: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For a non-decreasing source index per output position: (first output position, count)
    of each of the ``n`` source positions (count 0 where none maps to it)."""
    counts = np.bincount(index.cpu().numpy(), minlength=n)
    return np.concatenate([[0], np.cumsum(counts)[:-1]]), counts


def _upsample_argmax(p: torch.Tensor, hw: tuple[int, int], chunk: int = 1 << 22) -> torch.Tensor:
    """argmax over C of ``p`` (C, h, w) bilinearly resized to ``hw``, without the C x H x W tensor.

    An output pixel is a convex combination of its four source pixels; where those share one
    argmax, so does every convex combination of them. So the low-resolution argmax is repeated
    out (output positions map to source cells in runs) and only the output pixels of cells whose
    four source pixels disagree (near low-resolution label boundaries) are interpolated, cell by
    cell from the cell's four corner vectors (the same lerps in the same order as a full
    interpolation). Maps with many such cells take the separable path instead. ``chunk`` bounds
    the floats interpolated at once.
    """
    c, h, w = p.shape
    pt = p.permute(1, 2, 0).contiguous()  # (h, w, C): free when p is a channels-last view
    low = _argmax_last(pt)
    low = low.to(torch.uint8) if c <= 256 else low
    down = torch.cat([low[1:], low[-1:]], 0)
    right = torch.cat([low[:, 1:], low[:, -1:]], 1)
    diag = torch.cat([right[1:], right[-1:]], 0)
    mixed = (low != down) | (low != right) | (low != diag)  # cell (i, j): source pixels i..i+1, j..j+1
    if mixed.float().mean() > 0.25:
        return _upsample_argmax_separable(p, hw, chunk)
    y0, _, wy = _source_index(hw[0], h, p.device)
    x0, _, wx = _source_index(hw[1], w, p.device)
    sy, ny = _runs(y0, h)
    sx, nx = _runs(x0, w)
    out_np = np.repeat(np.repeat(low.cpu().numpy(), nx, axis=1), ny, axis=0)  # nearest source cell
    ci, cj = (t.cpu().numpy() for t in torch.nonzero(mixed, as_tuple=True))
    keep = (ny[ci] > 0) & (nx[cj] > 0)
    ci, cj = ci[keep], cj[keep]
    if ci.size:
        my, mx = int(ny.max()), int(nx.max())
        flat = pt.view(h * w, c)
        dev = p.device
        step = max(1, chunk // (my * mx * c))
        for s in range(0, ci.size, step):
            i, j = ci[s:s + step], cj[s:s + step]
            oy = sy[i][:, None] + np.arange(my)  # (m, my) output rows of each cell, padded
            ox = sx[j][:, None] + np.arange(mx)
            vy, vx = np.arange(my) < ny[i][:, None], np.arange(mx) < nx[j][:, None]
            oy_t = torch.from_numpy(np.minimum(oy, hw[0] - 1)).to(dev)
            ox_t = torch.from_numpy(np.minimum(ox, hw[1] - 1)).to(dev)
            i1, j1 = np.minimum(i + 1, h - 1), np.minimum(j + 1, w - 1)
            corner = [flat.index_select(0, torch.from_numpy(a * w + b).to(dev))[:, None]
                      for a, b in ((i, j), (i, j1), (i1, j), (i1, j1))]  # (m, 1, C)
            fx = wx[ox_t][:, :, None]  # (m, mx, 1)
            top = torch.lerp(corner[0], corner[1], fx)  # (m, mx, C)
            bottom = torch.lerp(corner[2], corner[3], fx)
            v = torch.lerp(top[:, None], bottom[:, None], wy[oy_t][:, :, None, None])  # (m, my, mx, C)
            best = _argmax_last(v).cpu().numpy().astype(out_np.dtype)  # (m, my, mx)
            valid = vy[:, :, None] & vx[:, None, :]
            mm, yy, xx = np.nonzero(valid)
            out_np[oy[mm, yy], ox[mm, xx]] = best[mm, yy, xx]
    return torch.from_numpy(out_np).to(p.device)


def _upsample_argmax_separable(p: torch.Tensor, hw: tuple[int, int], chunk: int = 1 << 18) -> torch.Tensor:
    """As :func:`_upsample_argmax` for maps with many label boundaries: the width pass is done in
    full at the low height (C x h x W); in the height pass only pixels between two rows of
    different argmax are interpolated."""
    _, h, w = p.shape
    if hw[0] * w < h * hw[1]:  # smaller intermediate when the height pass goes first
        return _upsample_argmax_separable(p.transpose(1, 2), (hw[1], hw[0]), chunk).t()
    # width pass in channels-last memory: the (h, W, C) view below needs no copy
    a = _resize(p[None].contiguous(memory_format=torch.channels_last), (h, hw[1]))
    at = a.permute(0, 2, 3, 1)[0].contiguous()  # (h, W, C)
    rows = at.argmax(-1)  # (h, W)
    y0, y1, wy = _source_index(hw[0], h, p.device)
    out = rows.index_select(0, y0)
    iy, ix = torch.nonzero(out != rows.index_select(0, y1), as_tuple=True)
    flat = at.view(h * hw[1], -1)
    for s in range(0, iy.numel(), chunk):
        ty, tx = iy[s:s + chunk], ix[s:s + chunk]
        v = torch.lerp(flat.index_select(0, y0[ty] * hw[1] + tx), flat.index_select(0, y1[ty] * hw[1] + tx),
                       wy[ty, None])
        out[ty, tx] = v.argmax(1)
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, image: np.ndarray | torch.Tensor, cfg: TTAConfig = DEFAULT_TTA, *,
            shared: dict[tuple[bool, str], torch.Tensor] | None = None) -> np.ndarray:
    """HxW uint8 class-id map: the argmax of :func:`predict_probs`, computed without the C x H x W
    probabilities (only pixels on low-resolution label boundaries are interpolated).

    ``shared``: pass one empty dict per image to several calls (modes) on the same image: the
    stretched S x S view they have in common is then run once (see ``_low_res_probs``)."""
    low, hw = _low_res_probs(model, image, cfg, shared)
    return _upsample_argmax(low[0], hw).to(torch.uint8).cpu().numpy()
