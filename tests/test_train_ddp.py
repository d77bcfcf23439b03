"""Two processes under torchrun on the CPU (gloo): ranks stay identical, rank 0 alone writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from goose_lib.models import checkpoint as ckpt


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from goose_lib.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("ck112") / "sam3", image_size=112)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_agree_and_rank0_writes(tiny_root, small_ckpt, tmp_path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "goose_lib", "train", "--out-dir", str(out), "--data-root", str(tiny_root),
           "--sam3-checkpoint", str(small_ckpt), "--decoder-channels", "16", "--batch-size", "2", "--steps", "3",
           "--checkpoint-interval", "2", "--train-limit", "4", "--val-limit", "3", "--device", "cpu",
           "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("composite mIoU") == 1  # only rank 0 reports
    final = ckpt.find_latest(out)
    run = ckpt.load_run(final)
    assert final.name == "step_0000003" and run["params"]["world_size"] == 2
    digests = run["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # DDP kept both ranks bit-identical
    assert len(run["rng"]) == 2 and run["rng"][0]["torch"] != run["rng"][1]["torch"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000002", "step_0000003"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or ".old" in p.name]
    # The validation was split across the ranks and summed: all 3 validation images were scored.
    assert run["val"]["composite"] is not None and sum(run["val"]["support"]) > 0
    assert isinstance(ckpt.load_student(final), object)
    # Resuming the 2-process run in 1 process would change the global batch: refused, with the reason.
    single = [sys.executable, "-m", "goose_lib", *cmd[cmd.index("train"):]]
    single[single.index("--steps") + 1] = "4"
    again = subprocess.run(single, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0
    assert "written by 2 process(es), this launch has 1" in again.stderr and "global batch" in again.stderr
    assert ckpt.find_latest(out).name == "step_0000003"  # nothing was trained
