"""Data-parallel profiling: DDP on 2 processes with gloo on 127.0.0.1, through the CLI.

Three real runs (each pays for starting torchrun and two ranks, which import
torch and DDP): one that succeeds, one where rank 1 dies mid-run, one where
rank 1 hangs.  Everything else is pure and fast: the time partition, the
charge of a step, merging ranks, the launcher's diagnosis, the ring model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import factories
from factories import environment, layer
from layertime.cost.comm import (
    BUCKET_CAP_BYTES,
    FIRST_BUCKET_BYTES,
    LayerInput,
    assign_buckets,
    predict_comm,
    ring_allreduce_s,
    simulate_step,
)
from layertime.errors import LayertimeError
from layertime.measure.attribute import StepCharges
from layertime.measure.parallel.ddp_comm import BucketTimes, StepComm, charge_step, partition_busy
from layertime.measure.parallel.launch import diagnose, torchrun_failures, worker_argv
from layertime.measure.parallel.merge import merge_ranks
from layertime.results.parallel.comm import Bucket, Link
from layertime.results.run import Run

#: Each launch must end within this (the slowest, a hang, waits for its 3 s timeout).
BOUND_S = 100
TIMEOUT_S = 3

MODEL = '''
import os
import time

from torch import nn


class Net(nn.Module):
    """conv + fully connected; TINY_FAIL="rank:call:exit|hang" breaks one rank's forward."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Linear(8 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, num_classes)
        )
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        fail = os.environ.get("TINY_FAIL")
        if fail:
            rank, call, mode = fail.split(":")
            if os.environ.get("RANK") == rank and self.calls == int(call):
                if mode == "exit":
                    os._exit(1)
                time.sleep(3600)
        return self.classifier(self.features(x).flatten(1))


def build(num_classes: int = 10) -> nn.Module:
    return Net(num_classes)
'''


# -- real runs -------------------------------------------------------------------


def _ours(marker: str) -> list[int]:
    """Pids of live processes whose command line mentions ``marker``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            state = next(
                (ln for ln in (d / "status").read_text().splitlines() if ln.startswith("State:")),
                "",
            )
        except OSError:
            continue
        if marker in cmd and "zombie" not in state:
            out.append(int(d.name))
    return out


def _launch(
    tmp: Path, *extra: str, fail: str | None = None, store: bool = False
) -> tuple[subprocess.CompletedProcess[str], float]:
    model = tmp / "tiny_ddp_net.py"
    if not model.exists():
        model.write_text(textwrap.dedent(MODEL))
    env = dict(os.environ)
    env.pop("TINY_FAIL", None)
    if fail:
        env["TINY_FAIL"] = fail
    cmd = [
        sys.executable, "-m", "layertime", "profile", f"{model}:build",
        "--nproc", "2", "--input-shape", "3,16,16", "--num-classes", "10",
        "--batch-size", "4", "--steps", "2", "--warmup", "1", "--width", "160",
        *([] if store else ["--no-store"]), *extra,
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp)
    return proc, time.monotonic() - t0


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, str, str, Path]]:
    tmp = tmp_path_factory.mktemp("ddp")
    out = tmp / "run.json"
    proc, _ = _launch(tmp, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    yield Run.load(out), proc.stdout, proc.stderr, tmp


@pytest.mark.slow
def test_both_ranks_are_gathered_into_one_result(ddp_run: tuple[Run, str, str, Path]) -> None:
    run, stdout, _, _ = ddp_run
    assert run.world_size == 2 and run.backend == "gloo"
    assert [r.rank for r in run.ranks] == [0, 1]
    assert all(r.profiled_step_s > 0 and r.step_s > 0 for r in run.ranks)
    # Only rank 0 reports: one headline, one table.
    assert stdout.count("gradient all-reduce over 2 ranks") == 1
    assert "comm ms" in stdout and "rank 1 (" in stdout
    # Layer names are the model's own, not DDP's ``module.`` ones.
    assert {r.name for r in run.layers} >= {"features.0", "classifier.0", "classifier.2"}
    assert run.link is not None and run.link.bandwidth_gbps > 0
    assert run.buckets and sum(b.bytes for b in run.buckets) == run.comm_bytes


@pytest.mark.slow
def test_each_rank_reports_its_memory(ddp_run: tuple[Run, str, str, Path]) -> None:
    run, stdout, _, _ = ddp_run
    assert run.memory is not None and run.memory.rank in (0, 1)
    assert all(r.peak_bytes > 0 and r.saved_bytes > 0 for r in run.ranks)
    # DDP replicates the model: each rank holds all of it.
    assert all(r.params_bytes == 4 * run.params == r.grads_bytes for r in run.ranks)
    assert run.memory.peak_bytes == max(r.peak_bytes for r in run.ranks)
    assert "rank 0 memory: peak" in stdout and "rank 1 memory: peak" in stdout


@pytest.mark.slow
def test_comm_is_charged_only_to_layers_with_parameters(
    ddp_run: tuple[Run, str, str, Path],
) -> None:
    run = ddp_run[0]
    for r in run.layers:
        if r.params:
            assert r.comm_s > 0 and r.comm_bytes == 4 * r.params, r
            assert 0 <= r.comm_exposed_s <= r.comm_s + 1e-12
        else:
            assert r.comm_s == 0 and r.comm_exposed_s == 0 and r.comm_bytes == 0, r


@pytest.mark.slow
def test_fc_share_of_bytes_equals_fc_share_of_parameters(
    ddp_run: tuple[Run, str, str, Path],
) -> None:
    run = ddp_run[0]
    kinds = run.by_kind()
    fc_bytes = sum(r.comm_bytes for r in run.layers if r.kind == "linear")
    fc_params = sum(r.params for r in run.layers if r.kind == "linear")
    # Exactly, as integers: bytes are exact.
    assert fc_bytes * run.params == fc_params * run.comm_bytes
    assert kinds["linear"].comm_bytes_share == pytest.approx(kinds["linear"].params_share, abs=0)


@pytest.mark.slow
def test_rows_still_add_up_to_the_step(ddp_run: tuple[Run, str, str, Path]) -> None:
    run = ddp_run[0]
    p = run.phases
    rows = sum(r.total_s for r in run.layers) + p.loss_s + p.zero_grad_s + p.data_s
    assert rows + p.unattributed_s == pytest.approx(run.profiled_step_s, rel=1e-9)
    assert p.total_s == pytest.approx(run.profiled_step_s, rel=1e-9)
    assert p.comm_exposed_s == pytest.approx(sum(r.comm_exposed_s for r in run.layers))
    assert sum(k.share for k in run.by_kind().values()) == pytest.approx(1.0)
    # And the result survives JSON.
    assert Run.from_json(run.to_json()) == run


@pytest.mark.slow
def test_what_if_against_the_measured_run(ddp_run: tuple[Run, str, str, Path]) -> None:
    run, _, _, tmp = ddp_run
    from layertime.cost.comm import from_run

    pred = from_run(run)
    assert pred.workers == 2 and pred.bucket_source == "measured (DDP)"
    assert pred.measured_bucket_s is not None and pred.step_s is not None
    assert pred.measured_comm_s == pytest.approx(run.comm_s)
    # Predicted shares follow bytes: the fc share equals its parameter share.
    assert pred.by_kind()["linear"].predicted_share == pytest.approx(
        run.by_kind()["linear"].params_share
    )


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_run_naming_it(tmp_path: Path) -> None:
    from layertime.store import Store

    db = Path(os.environ["LAYERTIME_DB"])
    with Store(db) as store:
        kept = store.add("profile", model="earlier", config={}, result={"x": 1})
    # Forward call 1 is the input check, 2 the warm-up step, 3 the first measured step.
    proc, took = _launch(tmp_path, fail="1:3:exit", store=True)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["layertime: error: rank 1 exited with code 1 during step 2"], proc.stderr
    assert took < BOUND_S
    assert _ours(str(tmp_path)) == []
    with Store(db) as store:
        assert [r.id for r in store.list()] == [kept]


@pytest.mark.slow
def test_a_rank_that_hangs_fails_the_run_within_the_timeout(tmp_path: Path) -> None:
    proc, took = _launch(tmp_path, "--ddp-timeout", str(TIMEOUT_S), fail="1:3:hang")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("layertime: error: rank 1 stopped responding in step 2")
    assert f"{TIMEOUT_S} s timeout" in lines[0]
    assert took < BOUND_S
    assert _ours(str(tmp_path)) == []


def test_ddp_outside_torchrun_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from layertime.cli import main

    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(LayertimeError, match="torchrun"):
        main(["--debug", "profile", "alexnet", "--ddp", "--no-store"])


# -- pure parts ----------------------------------------------------------------


def test_partition_shares_overlap_equally_and_adds_up_to_the_union() -> None:
    parts = partition_busy([(0.0, 4.0), (1.0, 2.0), (6.0, 7.0)], split_s=3.0)
    # [0,1] a; [1,2] a and b halves; [2,4] a; [6,7] c; split at 3.
    assert parts[0] == pytest.approx((1.0 + 0.5 + 1.0, 1.0))
    assert parts[1] == pytest.approx((0.5, 0.0))
    assert parts[2] == pytest.approx((0.0, 1.0))
    assert sum(a + b for a, b in parts) == pytest.approx(4.0 + 1.0)


def _charges(unattributed: float, comm_on_thread: float) -> StepCharges:
    c = StepCharges(step_s=1.0)
    c.modules = {(1, "forward"): 0.2, (1, "backward"): 0.3, (2, "backward"): 0.1}
    c.step = {"loss": 0.0, "zero_grad": 0.0, "data": 0.0, "update": 0.1,
              "unattributed": unattributed, "comm": comm_on_thread}
    return c


def test_charge_moves_the_wait_after_backward_into_comm_by_bytes() -> None:
    # Bucket 0 (module 2: 300 B, module 1: 100 B) from 0.1 to 0.4; bucket 1 (module 1) 0.3-0.5.
    comm = StepComm((
        BucketTimes(0, 400, {2: 300, 1: 100}, 0.09, 0.1, 0.4),
        BucketTimes(1, 100, {1: 100}, 0.29, 0.3, 0.5),
    ), compute_end_s=0.35)
    before = _charges(unattributed=0.25, comm_on_thread=0.05)
    total_before = before.total_s()
    c = charge_step(before, comm, device_time=False)
    assert c.total_s() == pytest.approx(total_before)  # still a partition of the step
    # After 0.35: [0.35,0.4] shared by both, [0.4,0.5] bucket 1: 0.15 of waiting.
    assert c.step["unattributed"] == pytest.approx(0.25 - 0.15)
    assert c.step["comm"] == pytest.approx(0.05 + 0.15)
    assert sum(x.exposed_s for x in c.comm.values()) == pytest.approx(c.step["comm"])
    assert c.comm_bytes == {2: 300, 1: 200}
    # Module 2: 3/4 of bucket 0 (0.3 - 0.05 - ... see partition) plus 300/500 of the on-thread part.
    busy0 = 0.2 + 0.05 / 2 + 0.05 / 2  # [0.1,0.3] alone, [0.3,0.4] shared
    assert c.comm[2].comm_s == pytest.approx(0.75 * busy0 + 0.05 * 300 / 500)
    assert c.comm[2].exposed_s == pytest.approx(0.75 * 0.025 + 0.05 * 300 / 500)
    assert [b.index for b in c.buckets] == [0, 1]
    assert c.buckets[0].allreduce_s == pytest.approx(0.4 - 0.09)


def test_traced_steps_are_charged_in_the_order_they_ended() -> None:
    """CUDA charges several traced steps after one session: end_step keeps each step's
    bucket times, charge takes them first in, first out."""
    from types import SimpleNamespace

    import torch

    from layertime.measure.parallel.ddp_comm import CommCollector

    col = CommCollector(2, torch.device("cpu"))
    for done in (0.5, 0.9):  # step 1 waits 0.1 after compute, step 2 waits 0.5
        col._launches = [SimpleNamespace(index=0, bytes=8, modules={1: 8}, start=0.0,
                                         launched=0.1, done=done)]
        col._compute_end = 0.4
        col.end_step()
    first = col.charge(_charges(unattributed=1.0, comm_on_thread=0.0), device_time=False)
    second = col.charge(_charges(unattributed=1.0, comm_on_thread=0.0), device_time=False)
    assert first.step["comm"] == pytest.approx(0.1)
    assert second.step["comm"] == pytest.approx(0.5)
    assert [b.index for b in col.bucket_rows()] == [0]


def test_charge_never_takes_more_wait_than_is_unattributed() -> None:
    comm = StepComm((BucketTimes(0, 8, {1: 8}, 0.0, 0.0, 1.0),), compute_end_s=0.0)
    c = charge_step(_charges(unattributed=0.1, comm_on_thread=0.0), comm, device_time=False)
    assert c.step["unattributed"] == pytest.approx(0.0)
    assert c.step["comm"] == pytest.approx(0.1)


def _run(rank_compute: float, exposed: float, host: str = "h") -> Run:
    return factories.run(
        [layer("conv", "conv", 0.1, 0.2, 0.01, 100, type="Conv2d",
               comm_s=0.01, comm_exposed_s=0.005, comm_bytes=400),
         layer("fc", "linear", 0.1, rank_compute - 0.5, 0.09, 900, type="Linear",
               comm_s=exposed + 0.01, comm_exposed_s=exposed - 0.005, comm_bytes=3600)],
        comm_exposed_s=exposed, profiled=lambda total: (total, total), model="m", num_classes=None,
        environment=environment(device_name="cpu", torch="2", host=host),
    )


def test_merge_ranks_means_rows_and_shows_a_straggler() -> None:
    merged = merge_ranks([_run(2.0, 0.1), _run(1.0, 1.1)], backend="gloo")
    assert merged.world_size == 2 and [r.rank for r in merged.ranks] == [0, 1]
    rows = sum(r.total_s for r in merged.layers) + merged.phases.unattributed_s
    assert rows == pytest.approx(merged.profiled_step_s)
    fc = next(r for r in merged.layers if r.name == "fc")
    assert fc.backward_s == pytest.approx(1.0)
    assert fc.rank_spread_s == pytest.approx(0.0)  # compute and waiting trade off exactly
    assert merged.ranks[1].wait_s == pytest.approx(1.0)
    assert any(w.startswith("rank 0 (h) computes 100% longer") for w in merged.warnings)
    assert "fully connected" in merged.headline()


def test_old_json_without_comm_fields_still_loads() -> None:
    run = _run(1.0, 0.0)
    d = json.loads(run.to_json())
    for k in ("world_size", "backend", "ranks", "buckets", "link", "comm_s", "comm_bytes"):
        d.pop(k)
    d["phases"].pop("comm_exposed_s")
    for row in d["layers"]:
        for k in ("comm_s", "comm_exposed_s", "comm_bytes", "rank_spread_s"):
            row.pop(k)
    old = Run.from_dict(d)
    assert old.world_size == 1 and old.comm_s == 0 and old.phases.comm_exposed_s == 0.0
    assert "all-reduce" not in old.headline()


def test_diagnose_names_the_dead_rank_before_the_one_that_lost_it() -> None:
    statuses = {
        0: {"rank": 0, "state": "error", "comm": True, "message": "rank 1 died (...)", "step": 2},
        1: {"rank": 1, "state": "running", "step": 3},
    }
    assert diagnose(2, statuses, {1: 1}, "") == "rank 1 exited with code 1 during step 3"
    assert diagnose(2, statuses, {1: -9}, "") == "rank 1 was killed by SIGKILL during step 3"
    # A hang: the rank that timed out names the one that stopped; torchrun then
    # terminates the hung one (SIGTERM), which is no cause.
    statuses[0]["message"] = "rank 1 stopped responding in step 3 (computing)"
    assert diagnose(2, statuses, {0: 1, 1: -15}, "").startswith("rank 1 stopped responding")
    # Bad input on every rank: one line, the lowest rank.
    bad = {r: {"state": "error", "comm": False, "message": f"rank {r}: unknown model"}
           for r in (0, 1)}
    assert diagnose(2, bad, {0: 1, 1: 1}, "") == "rank 0: unknown model"
    assert diagnose(2, {}, {}, "boom\nport in use\n").endswith("port in use")


def test_torchrun_report_is_parsed_and_argv_rewritten() -> None:
    log = textwrap.dedent("""\
        Root Cause (first observed failure):
        [0]:
          time      : 2026-01-01_00:00:00
          host      : vm
          rank      : 1 (local_rank: 1)
          exitcode  : -9 (pid: 123)
        """)
    assert torchrun_failures(log) == {1: -9}
    assert worker_argv(["profile", "m", "--nproc", "2", "-b", "4"]) == [
        "profile", "m", "-b", "4", "--ddp"]
    assert worker_argv(["--debug", "profile", "m", "--nproc=2"]) == [
        "--debug", "profile", "m", "--ddp"]


def test_ring_allreduce_formula() -> None:
    link = Link(bandwidth_gbps=100, latency_us=5)
    b = 100 * 2**20
    assert ring_allreduce_s(b, 64, link) == pytest.approx(
        2 * 63 / 64 * b / (100e9 / 8) + 2 * 63 * 5e-6
    )
    assert ring_allreduce_s(b, 1, link) == 0.0
    with pytest.raises(LayertimeError):
        Link(0)


def test_buckets_follow_ddp_caps_in_ready_order() -> None:
    mib = 2**20
    ready = [("fc3", mib // 2), ("fc2", 2 * mib), ("fc1", 100 * mib), ("conv", 3 * mib)]
    bks = assign_buckets(ready, BUCKET_CAP_BYTES, FIRST_BUCKET_BYTES)
    assert [dict(b.layers) for b in bks] == [
        {"fc3": mib // 2, "fc2": 2 * mib}, {"fc1": 100 * mib}, {"conv": 3 * mib}
    ]


def test_step_simulation_overlaps_buckets_with_backward() -> None:
    bks = (Bucket(0, {"fc": 10}), Bucket(1, {"conv": 10}))
    # Backward: fc 1 s then conv 1 s. fc's bucket (0.5 s) hides behind conv's backward,
    # conv's bucket (0.5 s) is exposed.
    exposed, bwd = simulate_step(bks, (0.5, 0.5), [("fc", 1.0), ("conv", 1.0)])
    assert (exposed, bwd) == (pytest.approx(0.5), pytest.approx(2.0))
    exposed, _ = simulate_step(bks, (3.0, 0.5), [("fc", 1.0), ("conv", 1.0)])
    assert exposed == pytest.approx(1.0 + 3.0 + 0.5 - 2.0)
    pred = predict_comm(
        "m", [LayerInput("conv", "conv", 10, 1.0), LayerInput("fc", "linear", 30, 1.0)], 2,
        Link(8e-9 * 40), compute_s=3.0,
    )
    assert pred.step_s is not None and pred.step_s >= 3.0
    assert pred.by_kind()["linear"].predicted_share == pytest.approx(0.75, rel=1e-3)
    assert replace(pred, compute_s=None).step_s is None


@pytest.mark.slow
def test_a_sharded_rank_that_hangs_fails_the_run_within_the_timeout(tmp_path: Path) -> None:
    """The same bound for FSDP2: a rank stops in its forward, the other waits in an
    all-gather until the timeout, and one line names the rank."""
    proc, took = _launch(tmp_path, "--fsdp", "--ddp-timeout", str(TIMEOUT_S),
                         fail="1:3:hang")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("layertime: error: rank 1 "), lines[0]
    assert took < BOUND_S
    assert _ours(str(tmp_path)) == []


def test_a_failure_after_every_rank_finished_and_rank_0_wrote_is_no_error() -> None:
    from layertime.measure.parallel.launch import finished_ranks

    done = {"state": "done", "step": 5}
    ok = {"state": "ok", "step": 5}
    assert finished_ranks(2, {0: done, 1: ok})
    assert not finished_ranks(2, {0: ok, 1: ok})  # rank 0 may not have written its outputs
    assert not finished_ranks(2, {0: done})  # rank 1 left no word
    assert not finished_ranks(2, {0: done, 1: {"state": "error", "message": "x"}})
    assert not finished_ranks(2, {0: done, 1: {"state": "running", "step": 3}})


def test_ranks_other_than_0_wait_for_rank_0s_outputs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from layertime.measure.parallel.health import (
        STATUS_DIR_ENV,
        StatusFile,
        mark_done,
        read_status,
        wait_for_rank0,
    )

    monkeypatch.setenv(STATUS_DIR_ENV, str(tmp_path))
    StatusFile(tmp_path, 0).write(state="ok", step=5, pid=123)
    t0 = time.monotonic()
    wait_for_rank0(timeout_s=0.2, poll_s=0.01)  # rank 0 not done: waits out the timeout
    assert time.monotonic() - t0 >= 0.2
    mark_done(0)
    assert read_status(tmp_path, 0) == {"rank": 0, "pid": 123, "state": "done", "step": 5}
    t0 = time.monotonic()
    wait_for_rank0(timeout_s=30.0, poll_s=0.01)  # done: returns at once
    assert time.monotonic() - t0 < 20.0
    monkeypatch.delenv(STATUS_DIR_ENV)
    wait_for_rank0(timeout_s=30.0)  # not under the launcher: nothing to wait for


def test_a_rank_frees_its_model_and_stops_its_heartbeat_before_leaving_the_group(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model held only by reference cycles (as FSDP2's is) is freed before the process
    group is destroyed, and the heartbeat thread has ended: left to the interpreter's
    teardown, either aborts the rank (``terminate called without an active exception``)."""
    import threading
    import weakref

    import torch.distributed as dist

    from layertime.measure.parallel.launch import free_port
    from layertime.measure.parallel.ranks import RankContext, run_rank
    from layertime.workload import WorkloadSpec

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    seen: dict[str, object] = {}

    def body(ctx: RankContext) -> str:
        cycle: list[object] = [ctx.prepared.model]
        cycle.append(cycle)  # only the garbage collector frees it
        seen["model"] = weakref.ref(ctx.prepared.model)
        seen["heartbeat"] = ctx.heartbeat is not None
        return "done"

    destroy = dist.destroy_process_group

    def spy(*args: object, **kwargs: object) -> None:
        ref = seen["model"]
        assert callable(ref)
        seen["alive_at_destroy"] = ref() is not None
        seen["beating_at_destroy"] = any(t.name == "layertime-heartbeat" and t.is_alive()
                                         for t in threading.enumerate())
        destroy(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dist, "destroy_process_group", spy)
    model = tmp_path / "tiny_rank_net.py"
    model.write_text(textwrap.dedent(MODEL))
    spec = WorkloadSpec.create(f"{model}:build", batch_size=2, input_shape=(3, 16, 16),
                               num_classes=10, device="cpu")
    assert run_rank(spec, body, backend="gloo") == "done"
    assert seen["heartbeat"] is True
    assert seen["alive_at_destroy"] is False
    assert seen["beating_at_destroy"] is False
    assert not dist.is_initialized()
