"""Verbs of the inference part: ``score`` (predictions in the submission layout), ``evaluate``
(a student on a labelled split, TTA modes in one pass), ``predict`` (a split's predictions,
resumable and shardable), ``submit`` (a validated challenge zip)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from goose_lib.cli.common import (
    INPUT_KINDS,
    add_field_options,
    command_params,
    data_root_arg,
    given,
    progress_arg,
    provenance,
    validated,
)


def _protocol_arg(p: argparse.ArgumentParser, allow_all: bool = False) -> None:
    from typing import get_args

    from goose_lib.config import EvalProtocol, VoidProtocol

    p.add_argument("--protocol", choices=[*get_args(VoidProtocol), *(["all"] if allow_all else [])],
                   default=EvalProtocol().void,
                   help=f"void handling (README 'Evaluation protocol'; ignore_void = ignore_class0; default "
                        f"{EvalProtocol().void})" + ("; all: every protocol side by side" if allow_all else ""))


def _exclude_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exclude-scenarios", nargs="+", default=[], metavar="SCENARIO",
                   help="scenario folders left out (e.g. 2023-05-17_neubiberg_sunny, misaligned labels)")


def _data_config(args: argparse.Namespace, limit: int | None = None) -> Any:
    from goose_lib.config import DataConfig

    return DataConfig(data_root=args.data_root, exclude_scenarios=tuple(args.exclude_scenarios), limit=limit)


def _split_arg(p: argparse.ArgumentParser, default: str, what: str) -> None:
    p.add_argument("--split", default=default, help=f"{what} (default {default})")


def _student_args(p: argparse.ArgumentParser) -> None:
    """The student and the inference options (TTAConfig fields) shared by evaluate, predict, submit."""
    from goose_lib.infer.config import TTAConfig

    p.add_argument("--checkpoint", required=True, help='student checkpoint folder, a training run folder '
                   '(its newest checkpoint), a notebook run of 03_training, or "untrained"')
    data_root_arg(p)
    _exclude_arg(p)
    add_field_options(p, TTAConfig, skip=("mode",))
    p.add_argument("--ensemble", nargs="+", default=[], metavar="CKPT",
                   help="more student checkpoints whose TTA probabilities are averaged with --checkpoint's")
    p.add_argument("--offload", action="store_true",
                   help="ensemble: keep one member on the device at a time (the others on the CPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    progress_arg(p)


def _modes(args: argparse.Namespace) -> dict[str, Any]:
    """{"single": ..., ["multiscale": ... when --scales was given]} from the TTAConfig options."""
    from goose_lib.infer.config import TTAConfig

    opts = given(args, TTAConfig)
    single = {k: v for k, v in opts.items() if k in ("flip", "window_batch", "autocast")}
    modes = {"single": validated(TTAConfig, single)}
    if "scales" in opts:
        modes["multiscale"] = validated(TTAConfig, {**opts, "mode": "multiscale"})
    return modes


def _tta(args: argparse.Namespace) -> Any:
    """The one TTAConfig predict and submit run: multiscale when --scales was given, else single."""
    modes = _modes(args)
    return modes.get("multiscale", modes["single"])


def _student(args: argparse.Namespace) -> Any:
    """The student of --checkpoint, or the ensemble of it and the --ensemble checkpoints."""
    from goose_lib.infer.ensemble import load_members
    from goose_lib.paths import resolve_device

    return load_members([args.checkpoint, *args.ensemble], device=resolve_device(args.device), offload=args.offload)


def add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score predictions in the submission layout against a split")
    p.add_argument("pred_dir", help="folder (or zip) of <scenario>/<stem>_labelids.png predictions")
    data_root_arg(p)
    _exclude_arg(p)
    _split_arg(p, "val", "labelled split the predictions are scored against")
    _protocol_arg(p, allow_all=True)
    p.add_argument("--json", action="store_true", help="print the scores as JSON on stdout")
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    import json

    from goose_lib.config import EvalProtocol
    from goose_lib.infer.submission import prediction_counts, score_predictions
    from goose_lib.metrics import compute_all_protocols, format_scores

    if args.protocol == "all":
        counts, ontology = prediction_counts(args.pred_dir, args.data_root, split=args.split, config=_data_config(args))
        every = {name: s.to_dict() for name, s in compute_all_protocols(counts, ontology).items()}
        print(json.dumps(every) if args.json else format_scores(every))
        return 0
    scores = score_predictions(args.pred_dir, args.data_root, split=args.split, protocol=EvalProtocol(args.protocol),
                               config=_data_config(args)).to_dict()
    print(json.dumps(scores) if args.json else format_scores({args.pred_dir: scores}))
    return 0


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a student on a labelled split (mode single, plus "
                                        "multiscale when --scales is given), in one pass")
    _student_args(p)
    _split_arg(p, "val", "labelled split to evaluate on")
    _protocol_arg(p)
    p.add_argument("--limit", type=int, default=None, help="first N images of the split")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0 = in-process)")
    p.add_argument("--out", default=None, help="folder for eval_summary.json and the CSVs (default eval_<split>)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from goose_lib.config import EvalProtocol
    from goose_lib.data.dataset import GooseDataset
    from goose_lib.infer.evaluate import evaluate
    from goose_lib.metrics import format_scores

    modes = _modes(args)
    with provenance("goose evaluate", command_params(args), INPUT_KINDS, device=args.device) as prov:
        model = _student(args)
        dataset = GooseDataset(args.data_root, args.split, config=_data_config(args, args.limit))
        result = evaluate(model, dataset, modes, EvalProtocol(args.protocol), workers=args.workers,
                          progress=not args.no_progress)
        paths = result.save(args.out or f"eval_{args.split}")
        prov["path"] = Path(paths["summary"]).parent / "provenance.json"
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"{model.description}; {len(dataset)} images of {args.split}")
        print(format_scores({n: s.to_dict() for n, s in result.scores.items()}))
        print(f"wrote {paths['summary']}")
    return 0


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="write predictions of a split in the submission layout (resumable, "
                                       "shardable; multiscale when --scales is given); score with `goose score`")
    _student_args(p)
    _split_arg(p, "val", "split to predict")
    p.add_argument("--out", required=True, help="predictions folder (<scenario>/<stem>_labelids.png)")
    p.add_argument("--shard", metavar="I/N", help="only images I::N (a cluster job array's share; all shards "
                                                  "may write into the same --out)")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from goose_lib.config import parse_shard
    from goose_lib.infer.submission import write_predictions

    tta = _tta(args)
    shard = parse_shard(args.shard) if args.shard else None
    with provenance("goose predict", command_params(args), INPUT_KINDS, device=args.device) as prov:
        model = _student(args)
        out = write_predictions(model, args.data_root, args.out, split=args.split, tta=tta, shard=shard,
                                config=_data_config(args), progress=not args.no_progress)
        # hidden: the folder holds predictions only (shards write their own record)
        prov["path"] = Path(out) / (f".goose_provenance.{shard[0]}-{shard[1]}.json" if shard else ".goose_provenance.json")
    print(f"predictions of split {args.split} ({tta.name}; {model.description}) in {out}"
          + (f" (shard {args.shard})" if shard else ""))
    return 0


def add_submit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="write and validate a challenge submission zip for a test split "
                                      "(multiscale when --scales is given)")
    _student_args(p)
    _split_arg(p, "test", "split predicted (the challenge's: test)")
    p.add_argument("--out", default="submission.zip", help="the zip to write")
    p.add_argument("--also", action="append", default=[], metavar="DATA_ROOT",
                   help="another dataset root whose --split goes into the same zip (e.g. GOOSE-Ex); repeatable")
    p.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    from goose_lib.infer.submission import Source, write_submission

    tta = _tta(args)
    sources = [Source(str(r), args.split) for r in [args.data_root, *args.also]] if args.also else None
    with provenance("goose submit", command_params(args), INPUT_KINDS, device=args.device) as prov:
        model = _student(args)
        out = write_submission(model, args.data_root, args.out, split=args.split, tta=tta,
                               config=_data_config(args), progress=not args.no_progress, sources=sources)
        prov["path"] = Path(f"{out}.provenance.json")  # beside the zip (the zip holds predictions only)
    n = "" if sources is None else f" ({len(sources)} roots)"
    print(f"wrote {out} for split {args.split}{n} ({tta.name}; {model.description}); validated")
    return 0


VERBS = (add_score, add_evaluate, add_predict, add_submit)
