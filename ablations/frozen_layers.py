"""Choose ``frozen_layers`` for the embedded foundation on a held-out part of train (never on val).

The same fixed hold-out of the training scenarios as the teacher's class selection
(``holdout_scenarios(train, 0.25, seed 0)``) becomes the validation split of a derived GOOSE
root (symlinks, under ``$GOOSE_SAM3_HOME``), scored against its *exact* labels
(``labels_exact/``); the other training scenarios are trained on, at the main job's default
budget, once per value and seed. Prints one line per value and writes the table as JSON.

    python ablations/frozen_layers.py [--values 0 2 4] [--seeds 0 1] [--out reports/frozen_layers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def derived_root(world: Path, held: list[str]) -> Path:
    """``world`` with train = its training scenarios but ``held``, val = ``held`` (exact labels)."""
    from goose_lib import paths
    from goose_lib.data.world import EXACT_LABELS

    out = paths.home() / f"train-holdout-{world.name}"
    if (out / "done").is_file():
        return out
    for sub in ("images", "labels"):
        for scen in sorted((world / sub / "train").iterdir()):
            split, src = ("val", world / (EXACT_LABELS if sub == "labels" else sub) / "train" / scen.name) \
                if scen.name in held else ("train", scen)
            dst = out / sub / split / scen.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.mkdir()
                for f in sorted(src.iterdir()):
                    (dst / f.name).symlink_to(f.resolve())
    for f in world.glob("*.csv"):
        if not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    (out / "done").write_text("ok\n")
    return out


def main() -> None:
    from goose_lib.data.embedded import resolve_data_root
    from goose_lib.data.layout import holdout_scenarios, index_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, nargs="+", default=[0, 2, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="reports/frozen_layers.json")
    ap.add_argument("--runs", default="runs/frozen_layers", help="training run folders")
    args = ap.parse_args()
    world = resolve_data_root("embedded")
    held = holdout_scenarios(index_split(world, "train"), 0.25, 0)
    root = derived_root(world, held)
    table = {}
    for k in args.values:
        scores = []
        for seed in args.seeds:
            run = Path(args.runs) / f"frozen={k}-seed={seed}"
            subprocess.run([sys.executable, "-m", "goose_lib", "train", "--out-dir", str(run), "--data-root", str(root),
                            "--frozen-layers", str(k), "--seed", str(seed), "--photometric", "standard",
                            "--no-progress"], check=True, env=os.environ.copy())
            rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
            scores.append(float([r for r in rows if "val_composite" in r][-1]["val_composite"]))
        table[k] = {"composite": scores, "mean": statistics.mean(scores)}
        print(f"frozen_layers={k}: held-out composite {statistics.mean(scores):.4f} ({scores})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"held_out_scenarios": held, "table": table}, indent=1))


if __name__ == "__main__":
    main()
