"""Process-group setup on CUDA without a GPU: the calls are recorded, not made.

Under torchrun on NCCL each rank must be bound to ``cuda:LOCAL_RANK`` before the group is created
and before the first collective (object collectives use the *current* CUDA device); the gloo path
itself runs for real in ``test_train_ddp.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist

from goose_lib.train import distributed
from goose_lib.train.distributed import all_gather_objects, all_reduce_mean, setup_distributed


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    state = {"init": False, "current": 0}

    def set_device(dev: Any) -> None:
        index = torch.device(dev).index if not isinstance(dev, int) else dev
        state["current"] = index
        calls.append(("set_device", index))

    class _DeviceGuard:  # torch.cuda.device(...) as a context manager
        def __init__(self, dev: Any) -> None:
            self.index = torch.device(dev).index

        def __enter__(self) -> None:
            self.prev, state["current"] = state["current"], self.index

        def __exit__(self, *exc: object) -> None:
            state["current"] = self.prev

    def init_process_group(backend: str, **kw: Any) -> None:
        state["init"] = True
        calls.append(("init", backend, kw.get("device_id")))

    def all_gather_object(out: list[Any], obj: Any) -> None:
        calls.append(("all_gather_object", state["current"]))
        out[:] = [obj] * len(out)

    def all_reduce(t: torch.Tensor) -> None:
        calls.append(("all_reduce", str(t.device)))

    def barrier(device_ids: list[int] | None = None) -> None:
        calls.append(("barrier", device_ids))

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "device", _DeviceGuard)
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: state["init"])
    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dist, "barrier", barrier)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append(("destroy",)))
    return calls


def test_cuda_rank_is_bound_before_the_group_and_the_first_collective(recorded) -> None:
    ctx = setup_distributed("cuda")
    assert (ctx.rank, ctx.world_size, ctx.device) == (1, 2, torch.device("cuda", 1))
    ctx.barrier()
    assert all_gather_objects({"rng": 1}, ctx.device) == [{"rng": 1}, {"rng": 1}]
    ctx.close()
    assert recorded == [
        ("set_device", 1),  # LOCAL_RANK=1 -> cuda:1, first of all
        ("init", "nccl", torch.device("cuda", 1)),
        ("barrier", [1]),
        ("all_gather_object", 1),  # the object collective ran with cuda:1 current
        ("destroy",),
    ]


def test_object_gather_runs_on_the_given_device_even_if_current_differs(recorded) -> None:
    ctx = setup_distributed("cuda")
    torch.cuda.set_device(0)  # something else changed the current device afterwards
    all_gather_objects("x", ctx.device)
    assert recorded[-1] == ("all_gather_object", 1)


def test_all_reduce_mean_reduces_on_the_given_device(recorded) -> None:
    setup_distributed("cuda")
    with pytest.raises(RuntimeError, match="meta"):  # float() of a meta tensor: the reduction itself was recorded
        all_reduce_mean(torch.tensor(2.0), torch.device("meta"))
    assert recorded[-1] == ("all_reduce", "meta")  # moved to the given device (cuda:LOCAL_RANK in training)


def test_cpu_group_is_gloo_and_never_touches_cuda(recorded) -> None:
    ctx = setup_distributed("cpu")
    assert ctx.device == torch.device("cpu")
    assert recorded == [("init", "gloo", None)]


def test_single_process_makes_no_calls(recorded, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    ctx = setup_distributed("cuda")
    assert ctx.world_size == 1 and recorded == []
    assert distributed.all_gather_objects(3) == [3]
