"""Issue 15 case 5: a truncated or non-safetensors ``model.safetensors`` is an error naming the
file and what is wrong, for the SAM3 loaders (student encoder, teacher), student checkpoints,
``goose train`` / ``goose teacher`` and notebook runs."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from goose_lib.models.sam3 import checkpoint_fingerprint, load_tracker, load_vision_encoder
from goose_lib.models.weights import WeightsFileError, check_safetensors, load_safetensors


def _damage(folder: Path, how: str) -> Path:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    if how == "half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "100 bytes":
        path.write_bytes(data[:100])
    elif how == "pickle":
        path.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}, protocol=4))
    elif how == "torch.save":
        torch.save({"weight": torch.zeros(3)}, path)
    elif how == "trailing bytes":
        path.write_bytes(data + b"\0" * 10)
    return path


EXPECTED = {
    "half": "truncated safetensors file: its header describes {need} bytes of tensor data, the file holds {held} ",
    "100 bytes": r"truncated safetensors file: its header alone needs \d+ bytes, the file holds 100",
    "pickle": r"not a safetensors file \(\d+ bytes, no safetensors header\) \(it looks like a Python pickle",
    "torch.save": r"not a safetensors file .*\(it looks like a zip archive, e.g. a torch.save file",
    "trailing bytes": r"damaged safetensors file: 10 bytes beyond the \d+ bytes of tensor data",
}


def test_known_answers_for_good_and_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    save_file({"a": torch.arange(6, dtype=torch.float32), "b": torch.ones(2, 2)}, str(good))
    header = check_safetensors(good)
    assert header["a"]["shape"] == [6] and header["b"]["data_offsets"] == [24, 40]
    assert load_safetensors(good)["a"].tolist() == [0, 1, 2, 3, 4, 5]
    for data, match in ((b"", "0 bytes, no safetensors header"), (b"\x10\0\0\0\0\0\0\0{not json}......",
                                                                  "unreadable header")):
        good.write_bytes(data)
        with pytest.raises(WeightsFileError, match=f"^{good}: not a safetensors file .*{match}"):
            check_safetensors(good)


@pytest.mark.parametrize("how", list(EXPECTED))
def test_sam3_loaders_name_the_file_and_the_problem(tiny_checkpoint: Path, tmp_path: Path, how: str) -> None:
    folder = Path(shutil.copytree(tiny_checkpoint, tmp_path / "sam3"))
    data = (folder / "model.safetensors").read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    path = _damage(folder, how)
    expected = EXPECTED[how].format(need=len(data) - header, held=len(data) // 2 - header)  # known sizes
    for load in (load_vision_encoder, load_tracker, checkpoint_fingerprint):
        with pytest.raises(WeightsFileError, match=f"^{path}: {expected}"):
            load(folder)


def test_student_checkpoint_with_truncated_weights(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from goose_lib.models import checkpoint as ckpt
    from goose_lib.models.student import StudentConfig, build_student
    from goose_lib.train.checkpoint import restore_training

    student = build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), decoder_channels=8))
    folder = ckpt.save_student(tmp_path / "student", student, params={}, extra_state={})
    assert isinstance(ckpt.load_student(folder), torch.nn.Module)  # the good folder loads
    path = _damage(folder, "half")
    with pytest.raises(WeightsFileError, match=f"^{path}: truncated safetensors file"):
        ckpt.load_student(folder)
    _damage(folder, "torch.save")
    with pytest.raises(WeightsFileError, match=f"^{path}: not a safetensors file .*zip archive"):
        restore_training(folder, student, None, None, ema_model=None)  # type: ignore[arg-type]


def test_cli_train_and_teacher_print_the_message(tiny_root: Path, tiny_checkpoint: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from goose_lib.cli import main

    folder = Path(shutil.copytree(tiny_checkpoint, tmp_path / "sam3"))
    path = _damage(folder, "pickle")
    capsys.readouterr()
    assert main(["teacher", "--data-root", str(tiny_root), "--split", "val", "--sam3-checkpoint", str(folder), "--limit", "1",
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"goose teacher: {path}: not a safetensors file") and "Traceback" not in err
    assert main(["train", "--out-dir", str(tmp_path / "run"), "--data-root", str(tiny_root), "--sam3-checkpoint",
                 str(folder), "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"goose train: {path}: not a safetensors file") and "pickle" in err


def test_notebook_run_records_the_message(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from goose_lib.reports.execute import execute_run

    folder = Path(shutil.copytree(tiny_checkpoint, tmp_path / "sam3"))
    path = _damage(folder, "half")
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell('sam3_checkpoint = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell("from goose_lib.models.sam3 import load_vision_encoder\n"
                                      "load_vision_encoder(sam3_checkpoint)")]
    nbformat.write(nb, tmp_path / "load.ipynb")
    rec = execute_run(tmp_path / "load.ipynb", tmp_path / "reports" / "load", {"sam3_checkpoint": str(folder)},
                      registry={})
    assert rec["status"] == "failed"
    assert rec["error"].startswith(f"WeightsFileError: {path}: truncated safetensors file")
