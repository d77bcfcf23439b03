"""Colour overlays of label maps on images, and their legends.

An overlay blends each labelled pixel's class colour (``Ontology.palette``) into the image:
``out = (1 - alpha) * image + alpha * colour``, rounded to uint8. Pixels whose class is not
shown (``classes`` subset) or that carry ``IGNORE_INDEX`` keep the image. With ``highlight``
set, only that class is coloured and every other pixel is dimmed (``image * dim``), so one
class stands out in a busy scene.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from goose_lib.ontology import IGNORE_INDEX, Ontology


def _check_pair(image: np.ndarray, label: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got shape {image.shape} dtype {image.dtype}")
    if label.ndim != 2:
        raise ValueError(f"label must be HxW, got shape {label.shape}")
    if label.shape != image.shape[:2]:
        raise ValueError(f"label shape {label.shape} does not match image shape {image.shape[:2]}")


def shown_mask(label: np.ndarray, num_classes: int, classes: Iterable[int] | None = None) -> np.ndarray:
    """HxW bool: pixels whose class id is valid (< ``num_classes``) and in ``classes`` (all if None)."""
    valid = label < num_classes
    if classes is None:
        return valid
    wanted = np.zeros(256, dtype=bool)
    ids = np.fromiter((int(c) for c in classes), dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"classes {sorted(set(ids.tolist()))} outside 0..{num_classes - 1}")
    wanted[ids] = True
    return valid & wanted[label]


def overlay(image: np.ndarray, label: np.ndarray, ontology: Ontology, *, alpha: float = 0.5,
            classes: Iterable[int] | None = None, highlight: int | None = None,
            dim: float = 0.35) -> np.ndarray:
    """Blend class colours into ``image``.

    Args:
        image: HxWx3 uint8 RGB.
        label: HxW integer class ids (0..num_classes-1; ``IGNORE_INDEX`` = not coloured).
        ontology: gives the colours (``palette``).
        alpha: colour weight in [0, 1] (0 = image only, 1 = colours only).
        classes: class ids to colour; None = all. Other pixels show the image.
        highlight: one class id; when set, only this class is coloured (if it is in
            ``classes``) and all other pixels are dimmed to ``image * dim``.
        dim: brightness factor in [0, 1] of the non-highlighted pixels.

    Returns:
        HxWx3 uint8 RGB (a new array).
    """
    _check_pair(image, label)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be in [0, 1], got {dim}")
    k = ontology.num_classes
    if label.size and label.dtype.kind == "i" and int(label.min()) < 0:
        raise ValueError(f"label has negative ids (min {int(label.min())})")
    bad = np.unique(label[(label >= k) & (label != IGNORE_INDEX)]) if label.size else label
    if bad.size:
        raise ValueError(f"label ids {bad.tolist()[:10]} outside the class table (0..{k - 1})")
    lab = label if label.dtype == np.uint8 else np.where(label >= k, IGNORE_INDEX, label).astype(np.uint8)
    mask = shown_mask(lab, k, classes)
    if highlight is not None:
        if not 0 <= int(highlight) < k:
            raise ValueError(f"highlight class {highlight} outside 0..{k - 1}")
        mask &= lab == int(highlight)
    # per pixel: w = alpha where coloured else 0; f = 1 where coloured, dim elsewhere if highlighting
    w = mask.astype(np.float32) * np.float32(alpha)
    f = np.where(mask, np.float32(1.0), np.float32(dim if highlight is not None else 1.0))
    lut = np.zeros((256, 3), np.float32)
    lut[:k] = ontology.palette
    out = image * (f * (1.0 - w))[..., None] + lut[lab] * w[..., None]
    return np.rint(out, out=out).clip(0, 255).astype(np.uint8)


def classes_present(label: np.ndarray, num_classes: int = 64, *, min_pixels: int = 1) -> list[int]:
    """Sorted class ids with at least ``min_pixels`` pixels in ``label`` (ignore ids skipped)."""
    counts = np.bincount(label.ravel().astype(np.int64), minlength=256)[:num_classes]
    return [int(i) for i in np.flatnonzero(counts >= min_pixels)]


def legend_handles(ontology: Ontology, class_ids: Sequence[int]) -> list:
    """matplotlib ``Patch`` handles (class colour, ``"<id> <name>"``) for ``class_ids``."""
    from matplotlib.patches import Patch

    return [Patch(facecolor=ontology.palette[c] / 255.0, edgecolor="black", linewidth=0.5,
                  label=f"{c} {ontology.classes[c].name}") for c in class_ids]


def legend_html(ontology: Ontology, class_ids: Sequence[int]) -> str:
    """A compact HTML legend (colour swatch + name per class) for widgets and reports."""
    items = []
    for c in class_ids:
        r, g, b = (int(v) for v in ontology.palette[c])
        name = ontology.classes[c].name
        items.append(
            f'<span style="display:inline-block;margin:1px 6px 1px 0;white-space:nowrap">'
            f'<span style="display:inline-block;width:10px;height:10px;border:1px solid #333;'
            f'background:rgb({r},{g},{b});margin-right:3px"></span>{c} {name}</span>'
        )
    return "<div style='font-size:11px;line-height:1.3'>" + "".join(items) + "</div>"


def overlay_figure(image: np.ndarray, label: np.ndarray, ontology: Ontology, *, alpha: float = 0.5,
                   classes: Iterable[int] | None = None, highlight: int | None = None,
                   title: str | None = None, legend_cols: int = 1, width: float = 9.0):
    """A matplotlib Figure: the overlay with a legend of the classes present and shown.

    Built without pyplot (``matplotlib.figure.Figure``), so no global figure registry holds it.
    """
    from matplotlib.figure import Figure

    shown = overlay(image, label, ontology, alpha=alpha, classes=classes, highlight=highlight)
    present = classes_present(label, ontology.num_classes)
    if classes is not None:
        keep = {int(c) for c in classes}
        present = [c for c in present if c in keep]
    if highlight is not None:
        present = [c for c in present if c == int(highlight)]
    h, w = label.shape
    fig = Figure(figsize=(width, width * 0.75 * h / max(w, 1) + 0.5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(shown)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    if present:
        fig.legend(handles=legend_handles(ontology, present), loc="outside right upper",
                   fontsize=8, ncols=legend_cols, frameon=False)
    return fig


def to_png(image: np.ndarray, *, max_side: int | None = None) -> bytes:
    """HxWx3 uint8 -> PNG bytes, downscaled (aspect kept) so the longer side <= ``max_side``."""
    from PIL import Image

    pil = Image.fromarray(image)
    if max_side is not None and max(pil.size) > max_side:
        scale = max_side / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
                         Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def fit(image: np.ndarray, *maps: np.ndarray | None, max_side: int | None) -> tuple:
    """Downscale ``image`` (bilinear) and label-like ``maps`` (nearest) so the longer side is at
    most ``max_side`` (aspect kept; None or already small: unchanged). Returns (image, *maps);
    None maps stay None. Overlaying after fitting is what keeps interactive views fast."""
    from PIL import Image

    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return (image, *maps)
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    out = [None if m is None else np.asarray(Image.fromarray(np.asarray(m)).resize(size, Image.Resampling.NEAREST))
           for m in maps]
    return (small, *out)


def from_png(data: bytes) -> np.ndarray:
    """PNG bytes -> HxWx3 uint8 (for tests and widgets)."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def crop_box(label: np.ndarray, class_id: int, *, pad: float = 0.5, min_side: int = 32
             ) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) around the largest connected region of ``class_id`` in ``label``,
    grown by ``pad`` x its size on each side (at least ``min_side`` pixels wide/high, clipped
    to the image); None when the class is absent."""
    from scipy import ndimage

    mask = label == class_id
    if not mask.any():
        return None
    comps, n = ndimage.label(mask)
    sizes = np.bincount(comps.ravel(), minlength=n + 1)
    sizes[0] = 0
    sl = ndimage.find_objects((comps == int(np.argmax(sizes))).astype(np.int32))[0]
    h, w = label.shape
    y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
    gy = max(int((y1 - y0) * pad), (min_side - (y1 - y0) + 1) // 2, 0)
    gx = max(int((x1 - x0) * pad), (min_side - (x1 - x0) + 1) // 2, 0)
    return max(0, y0 - gy), min(h, y1 + gy), max(0, x0 - gx), min(w, x1 + gx)


def collect_class_crops(items: Iterable[dict], class_ids: Sequence[int], *, per_class: int = 3,
                        pad: float = 0.5, max_side: int = 256) -> list[dict]:
    """Crops around instances of ``class_ids``, at most ``per_class`` per class (one per image).

    Args:
        items: dataset items (dicts with ``image`` HxWx3 uint8, ``label`` HxW ids and
            optionally ``sample`` with a ``key``), e.g. a GooseDataset or a generator over
            the samples known to contain the classes. Iteration stops once every class has
            ``per_class`` crops.
        max_side: crops are downscaled (nearest) so their longer side is at most this.

    Returns:
        dicts ``{"class_id", "image", "label", "key"}`` in the order of ``class_ids``.
    """
    want = [int(c) for c in class_ids]
    found: dict[int, list[dict]] = {c: [] for c in want}
    for item in items:
        label = item.get("label")
        if label is None:
            continue
        present = np.bincount(label.ravel().astype(np.int64), minlength=256)
        for c in want:
            if len(found[c]) >= per_class or present[c] == 0:
                continue
            y0, y1, x0, x1 = crop_box(label, c, pad=pad)  # type: ignore[misc]
            img, lab = item["image"][y0:y1, x0:x1], label[y0:y1, x0:x1]
            step = max(1, int(np.ceil(max(img.shape[:2]) / max_side)))
            sample = item.get("sample")
            found[c].append({"class_id": c, "image": np.ascontiguousarray(img[::step, ::step]),
                             "label": np.ascontiguousarray(lab[::step, ::step]),
                             "key": getattr(sample, "key", str(sample) if sample is not None else "")})
        if all(len(v) >= per_class for v in found.values()):
            break
    return [crop for c in want for crop in found[c]]


def dataset_class_crops(dataset: Any, class_ids: Sequence[int], *, per_class: int = 3,
                        max_scan: int | None = None, seed: int = 0, pad: float = 0.5,
                        max_side: int = 256, progress: bool = False) -> list[dict]:
    """:func:`collect_class_crops` over a ``GooseDataset``, reading label maps first.

    Samples are visited in a seeded random order (``seed``); only the label map is decoded
    until it holds a wanted class, then the full sample is loaded. At most ``max_scan`` label
    maps are read (None = the whole split), so rare classes on a large split cost seconds.
    """
    from tqdm.auto import tqdm

    from goose_lib.data.decode import load_sample, read_label

    ordered = list(dict.fromkeys(int(c) for c in class_ids))
    want = set(ordered)
    order = np.random.default_rng(seed).permutation(len(dataset.samples))[:max_scan]
    k = dataset.ontology.num_classes

    def items() -> Iterator[dict]:
        for i in tqdm(order, desc="gallery scan", unit="label", disable=not progress):
            sample = dataset.samples[int(i)]
            if sample.labelids is None:
                continue
            if want & set(np.unique(read_label(sample.labelids, k)).tolist()):
                yield load_sample(sample, num_classes=k)

    return collect_class_crops(items(), ordered, per_class=per_class,
                               pad=pad, max_side=max_side)
