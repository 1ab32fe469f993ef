"""Sharded training profiled for real: FSDP2, tensor parallelism and both, with gloo on
127.0.0.1 under torchrun.

``tests/sharded/user_loop.py`` is a user's own script: it shards a model itself (or as
``layertime profile --fsdp/--tp`` does), trains it under ``layertime.Profiler``, and
writes per rank its run, its losses beside an unsharded copy trained on the same batches,
torch's own count of the collectives (CommDebugMode) and one step traced beside the stock
profiler's events.  The CLI runs check the command line end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from layertime.results.run import Run

SCRIPT = Path(__file__).parent / "sharded" / "user_loop.py"

#: CommDebugMode's names -> layertime's kinds.
_DEBUG_KINDS = {
    "c10d._allgather_base_": "all_gather",
    "c10d.allgather_": "all_gather",
    "c10d._reduce_scatter_base_": "reduce_scatter",
    "c10d_functional.all_reduce": "all_reduce",
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _torchrun(mode: str, nproc: int, out: Path) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(_port()), str(SCRIPT), mode,
           str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


def _port() -> int:
    from layertime.measure.parallel.launch import free_port

    return free_port()


RUNS = {
    "fsdp-llama": 2, "fsdp-cnn": 4, "fsdp1-cnn": 2, "tp-llama": 2, "2d-llama": 4,
    "lt-tp-gpt2": 2, "lt-2d-gpt2": 4,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """mode -> (each rank's file, the output folder); every mode runs once, when first asked."""
    done: dict[str, tuple[list[dict[str, Any]], Path]] = {}

    def get(mode: str) -> tuple[list[dict[str, Any]], Path]:
        if mode not in done:
            out = tmp_path_factory.mktemp(mode)
            done[mode] = (_torchrun(mode, RUNS[mode], out), out)
        return done[mode]

    return get


ALL = sorted(RUNS)
#: FSDP2 on one dimension (FSDP1's all-gathers record no shapes: see test_fsdp1_...).
FSDP_1D = ["fsdp-cnn", "fsdp-llama"]
WITH_TP = [m for m in ALL if "tp" in m or "2d" in m]


def _per_kind(run: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in run["collectives"]:
        out[c["kind"]] = out.get(c["kind"], 0) + c["count"]
    return {k: v for k, v in out.items() if v}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ALL)
def test_sharded_model_trains_as_the_unsharded_one(runs, mode: str) -> None:
    """gloo's FSDP2 averages gradients as NCCL does here (no summed gradients): every
    rank's losses equal an unsharded copy's on the same batches."""
    for r in runs(mode)[0]:
        assert r["finite"]
        assert r["losses"] == pytest.approx(r["reference_losses"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ALL)
def test_collectives_charged_are_those_torch_counts(runs, mode: str) -> None:
    for r in runs(mode)[0]:
        expected = {_DEBUG_KINDS[k]: v for k, v in r["comm_debug_counts"].items()}
        assert _per_kind(r["run"]) == expected, mode
        stock = r["stock"]
        assert stock["charged_calls"] == stock["stock_gloo_events"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ALL)
def test_backend_time_charged_equals_the_stock_profilers_events(runs, mode: str) -> None:
    for r in runs(mode)[0]:
        stock = r["stock"]
        assert stock["charged_busy_s"] == pytest.approx(stock["stock_gloo_s"], rel=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ALL)
def test_rows_add_up_and_exposed_plus_hidden_is_charged(runs, mode: str) -> None:
    for r in runs(mode)[0]:
        stock = r["stock"]
        assert stock["rows_s"] == pytest.approx(stock["step_s"], rel=1e-9)
        assert stock["charged_s"] == pytest.approx(stock["layers_comm_s"] + stock["step_row_s"],
                                                   rel=1e-9)
        run = Run.from_dict(r["run"])
        assert run.phases.total_s == pytest.approx(run.profiled_step_s, rel=1e-9)
        assert sum(x.total_s for x in run.layers) + run.phases.loss_s + \
            run.phases.step_level_s + run.phases.unattributed_s == pytest.approx(
                run.profiled_step_s, rel=1e-9)
        # Kinds by what the layers compute, through FSDP's gathered parameters and
        # tensor parallelism's DTensors: every linear layer is fully connected.
        assert {r.kind for r in run.layers if r.type in ("Linear", "Conv1D")} == {"linear"}
        charged = sum(c.comm_s for c in run.collectives if c.scope != "step")
        assert charged == pytest.approx(run.comm_s, rel=1e-6)
        exposed = sum(c.exposed_s for c in run.collectives if c.scope != "step")
        assert exposed == pytest.approx(run.phases.comm_exposed_s, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", FSDP_1D)
def test_fsdp_bytes_are_the_units_padded_parameters(runs, mode: str) -> None:
    for r in runs(mode)[0]:
        expected = r["unit_bytes"]
        for c in r["run"]["collectives"]:
            if c["kind"] in ("all_gather", "reduce_scatter") and c["count"]:
                assert c["bytes"] == expected[c["target"]] * c["count"], c


@pytest.mark.slow
def test_fsdp1_units_are_its_wrappers_and_forward_gathers_their_flat_buffers(runs) -> None:
    """FSDP1 (as Lightning's FSDPStrategy and accelerate wrap models): its ranges name no
    unit, the wrapper they run in does; its all-gathers (tensor lists, no shapes) are
    sized by the unit's reduce-scatter."""
    for r in runs("fsdp1-cnn")[0]:
        run = Run.from_dict(r["run"])
        assert run.sharding is not None
        assert run.sharding.units == ("_fsdp_wrapped_module.features",
                                      "_fsdp_wrapped_module.classifier", "")
        rows = {(c.kind, c.phase, c.target): c for c in run.collectives}
        for unit in ("features", "classifier"):
            ag = rows[("all_gather", "forward", f"_fsdp_wrapped_module.{unit}")]
            rs = rows[("reduce_scatter", "backward", f"_fsdp_wrapped_module.{unit}")]
            assert ag.count == rs.count == 1 and ag.bytes == rs.bytes > 0
        # No parameter counted twice (FSDP1's flat buffer is not a layer's).
        assert run.params == 5568 // 4 + 132520 // 4


@pytest.mark.slow
@pytest.mark.parametrize("mode", WITH_TP)
def test_tp_collectives_go_to_the_parallel_layers(runs, mode: str) -> None:
    run = runs(mode)[0][0]["run"]
    layers = {c["target"] for c in run["collectives"] if c["kind"] == "all_reduce"}
    tp = set(run["sharding"]["tp_layers"])
    # Each all-reduce belongs to a layer of the plan (row-wise in forward, column-wise in
    # backward), never to the block that first used the result.
    generic = {".".join("*" if s.isdigit() else s for s in name.split(".")) for name in layers}
    assert generic <= tp, generic - tp
    styles = {c["phase"]: set() for c in run["collectives"]}
    for c in run["collectives"]:
        if c["kind"] == "all_reduce":
            name = ".".join("*" if s.isdigit() else s for s in c["target"].split("."))
            styles[c["phase"]].add(run["sharding"]["tp_layers"][name].split("_")[0])
    assert styles["forward"] == {"rowwise"}
    assert styles["backward"] == {"colwise"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ALL)
def test_rank_zero_gets_the_merged_run(runs, mode: str) -> None:
    ranks, out = runs(mode)
    merged = Run.load(out / "merged.json")
    assert merged.world_size == len(ranks)
    assert [r.rank for r in merged.ranks] == list(range(len(ranks)))
    assert merged.sharding is not None and merged.collectives
    assert merged.phases.total_s == pytest.approx(merged.profiled_step_s, rel=1e-9)
    assert "communication:" in merged.headline()


# -- the command line -----------------------------------------------------------------------


def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "layertime", "profile", *args, "--no-store", "--width", "80"]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400,
                          cwd=tmp)


GPT2_TINY = ("hf:gpt2", "--config", "n_layer=2", "--config", "n_embd=64", "--config",
             "n_head=4", "--config", "vocab_size=256", "--seq-len", "16", "-b", "2",
             "--steps", "2")


@pytest.mark.slow
def test_cli_fsdp_run(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    proc = _cli(tmp_path, *GPT2_TINY, "--nproc", "2", "--fsdp", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Run.load(out)
    assert run.sharding is not None and run.sharding.mode == "fsdp"
    assert run.sharding.units == ("transformer.h.0", "transformer.h.1", "")
    assert "communication:" in proc.stdout and "FSDP over 2 ranks" in proc.stdout
    assert " all-gather " in proc.stdout and " reduce-scatter " in proc.stdout
    for line in proc.stdout.splitlines():
        assert len(line) <= 80, line
    # The block's class, not FSDP's wrapper class, in the rows.
    assert {r.type for r in run.layers if r.name == "transformer.h.0"} == {"GPT2Block"}
    # Every layer with parameters carries its unit's share; none without.
    for r in run.layers:
        assert (r.comm_s > 0) == (r.params > 0), r
    # Memory per rank: each holds its shards of the parameters, gradients and momentum
    # (together all of them, and a little padding), not the whole model.
    assert run.memory is not None and len(run.ranks) == 2
    whole = 4 * run.params
    assert all(0 < r.params_bytes < whole and r.peak_bytes > 0 for r in run.ranks)
    assert whole <= sum(r.params_bytes for r in run.ranks) <= whole * 1.01
    assert all(r.grads_bytes == r.params_bytes for r in run.ranks)
    # Momentum for every parameter, the root unit's (embeddings, final norm) too: every
    # unit is resharded before the optimizer is made, so it holds the sharded parameters.
    assert all(r.optimizer_state_bytes == r.params_bytes for r in run.ranks)
    trained = [r for r in run.layers if r.params]
    assert trained and all(r.optimizer_state_bytes == r.params_bytes for r in trained)
    assert all(r.update_s > 0 for r in trained), [r.name for r in trained if not r.update_s]


@pytest.mark.slow
def test_cli_no_reshard_after_forward_gathers_once(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    proc = _cli(tmp_path, *GPT2_TINY, "--nproc", "2", "--fsdp", "--no-reshard-after-forward",
                "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Run.load(out)
    assert not [c for c in run.collectives
                if c.kind == "all_gather" and c.phase == "backward" and c.count]
    assert [c for c in run.collectives if c.kind == "all_gather" and c.phase == "forward"]
    assert "no reshard after forward" in run.headline()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("alexnet", "--nproc", "2", "--tp", "2"), "no tensor-parallel plan for alexnet"),
        (("hf:gpt2", "--nproc", "4", "--tp", "2"), "add --fsdp"),
        (("hf:gpt2", "--nproc", "3", "--fsdp", "--tp", "2"), "does not divide 3 ranks"),
        (("alexnet", "--fsdp", "--ddp"), "use one of them"),
        (("alexnet", "--no-reshard-after-forward"), "needs --fsdp"),
        (("hf:gpt2", "--nproc", "2", "--tp", "2", "--compile"), "--compile"),
    ],
)
def test_cli_refuses_bad_layouts_in_one_line(tmp_path: Path, args: tuple[str, ...],
                                             message: str) -> None:
    proc = _cli(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
