"""Issue 15 case 12: library noise silenced at its source and only there (scoped): transformers'
sam3_video -> sam3_tracker warning and weight-loading bars, torch's read-only NumPy warning in
scoring, papermill's "unknown parameter" for parameters the notebook's dataclass declares."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from reports_fakes import FakeParams

from goose_lib.quiet import drop_log_messages, no_transformers_progress


def test_drop_log_messages_is_scoped_to_one_logger_one_message_one_block(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("some.library")
    with caplog.at_level(logging.WARNING):
        with drop_log_messages("some.library", "expected noise"):
            log.warning("this is expected noise")
            log.warning("a real problem")
            logging.getLogger("other").warning("expected noise elsewhere")
        log.warning("expected noise after the block")
        with drop_log_messages("some.library", "Passed unknown parameter: lr", exact=True):
            log.warning("Passed unknown parameter: lr")
            log.warning("Passed unknown parameter: lr_typo")
    assert [r.getMessage() for r in caplog.records] == [
        "a real problem", "expected noise elsewhere", "expected noise after the block",
        "Passed unknown parameter: lr_typo"]
    assert log.filters == []


def test_load_tracker_is_quiet_and_restores_the_progress_bar_setting(tiny_checkpoint: Path,
                                                                     capfd: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as hf_logging

    from goose_lib.models.sam3 import load_tracker, load_vision_encoder

    assert hf_logging.is_progress_bar_enabled()
    capfd.readouterr()
    load_tracker(tiny_checkpoint)
    load_vision_encoder(tiny_checkpoint)
    err = capfd.readouterr().err
    assert "You are using a model of type" not in err and "Loading weights" not in err, err
    assert hf_logging.is_progress_bar_enabled()  # the user's setting is back
    assert logging.getLogger("transformers.configuration_utils").filters == []
    hf_logging.disable_progress_bar()
    try:
        with no_transformers_progress():
            pass
        assert not hf_logging.is_progress_bar_enabled()  # off before, off after
    finally:
        hf_logging.enable_progress_bar()


def test_scoring_read_only_arrays_raises_no_torch_warning() -> None:
    # torch warns once per process, so a fresh interpreter with warnings as errors
    code = (
        "import numpy as np\n"
        "from goose_lib.metrics import ConfusionMatrix\n"
        "pred = np.array([[1, 2], [2, 2]], np.uint8); label = np.array([[1, 2], [1, 2]], np.uint8)\n"
        "pred.setflags(write=False); label.setflags(write=False)\n"
        "cm = ConfusionMatrix(64); cm.update(pred, label)\n"
        "print(cm.counts[1, 1], cm.counts[1, 2], cm.counts[2, 2], cm.counts.sum())\n")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], check=False, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1", "2", "4"] and "not writable" not in proc.stderr


@dataclass(frozen=True)
class _Params(FakeParams):
    hidden: int = 0  # declared by the dataclass, not assigned in the parameters cell (as in 03_training)


def test_papermill_unknown_parameter_only_for_truly_unknown_names(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from reports_fakes import write_notebook

    from goose_lib.reports.execute import execute_run

    nb = write_notebook(tmp_path / "fake.ipynb", light=True)
    with caplog.at_level(logging.WARNING, logger="papermill"):
        rec = execute_run(nb, tmp_path / "reports" / "r", {"hidden": 3, "bogus": 1}, registry={"fake": _Params})
    assert rec["status"] == "ok"
    unknown = [r.getMessage() for r in caplog.records if "unknown parameter" in r.getMessage()]
    assert unknown == ["Passed unknown parameter: bogus"]
    assert logging.getLogger("papermill").filters == []
