"""The sharded what-if on small models (meta device): FSDP units and bytes as
``workload/sharding.py`` lays them out, TP's activation-sized all-reduces, compute divided
as TP divides it, the what-if of a measured run, the command line and the JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import factories
from layertime.cli import main
from layertime.cost import get_profile
from layertime.cost.sharded import estimate_sharded, predict_run, sharding_of_run
from layertime.models import ModelRef, resolve
from layertime.modules import ModuleTable
from layertime.results.parallel.comm import Link
from layertime.results.cost.sharded import ShardedCost
from layertime.workload import WorkloadSpec
from layertime.workload.sharding import ShardingSpec, fsdp_units

#: A two-block GPT-2 (hidden 64, 4 heads) laid out as factories.transformer_run's rows.
GPT2 = ["n_layer=2", "n_embd=64", "n_head=4", "vocab_size=100", "n_positions=16"]
LLAMA = ["num_hidden_layers=2", "hidden_size=64", "num_attention_heads=4",
         "num_key_value_heads=2", "intermediate_size=128", "vocab_size=128"]
BATCH, SEQ = 2, 16


def _workload(name: str, config: list[str]) -> WorkloadSpec:
    return WorkloadSpec.create(ModelRef(name, tuple(config)), batch_size=BATCH, seq_len=SEQ)


def _meta(name: str, config: list[str]) -> nn.Module:
    with torch.device("meta"):
        return resolve(ModelRef(name, tuple(config))).build(10)


def _padded(p: torch.Tensor, dp: int, shape: tuple[int, ...] | None = None) -> int:
    s = tuple(shape if shape is not None else p.shape)
    return math.ceil(s[0] / dp) * dp * math.prod(s[1:])


@pytest.fixture(scope="module")
def gpt2_fsdp() -> ShardedCost:
    return estimate_sharded(_workload("hf:gpt2", GPT2), ShardingSpec(fsdp=True), 4)[1]


def test_fsdp_units_and_gathered_bytes_are_sharding_py_s(gpt2_fsdp: ShardedCost) -> None:
    model = _meta("hf:gpt2", GPT2)
    units = fsdp_units([(e.name, e.kind, e.type, e.params) for e in ModuleTable(model)])
    assert gpt2_fsdp.units == units == ("transformer.h.0", "transformer.h.1", "")
    gathers = {c.owner: c for c in gpt2_fsdp.collectives
               if c.kind == "all_gather" and c.phase == "forward"}
    in_blocks: set[int] = set()
    for unit in units[:-1]:
        params = list(model.get_submodule(unit).parameters())
        in_blocks.update(id(p) for p in params)
        want = sum(_padded(p, 4) for p in params) * 4  # float32
        assert gathers[unit].bytes == want
        assert gathers[unit].wire_bytes == want * 3 // 4
    # The root: everything outside the blocks, the tied head once; 100 x 64 rows padded to 100.
    rest = [p for p in model.parameters() if id(p) not in in_blocks]
    assert gathers[""].bytes == sum(_padded(p, 4) for p in rest) * 4
    kinds = [(c.kind, c.phase, c.owner) for c in gpt2_fsdp.collectives]
    assert kinds.count(("all_gather", "backward", "")) == 0  # the root stays gathered
    assert len(kinds) == 3 + 2 + 3  # a forward gather and a reduce-scatter per unit, and
    # a backward gather per block


def test_a_units_collectives_are_charged_to_its_layers_by_bytes(gpt2_fsdp: ShardedCost) -> None:
    assert sum(r.comm_bytes for r in gpt2_fsdp.layers) == gpt2_fsdp.comm_bytes
    rows = {r.name: r for r in gpt2_fsdp.layers}
    # c_attn: 64 x 192 weight and 192 bias, gathered twice and reduce-scattered once.
    assert rows["transformer.h.0.attn.c_attn"].comm_bytes == 3 * (64 * 192 + 192) * 4
    assert rows["transformer.h.0.attn.c_attn"].local_params == (64 * 192 + 192) // 4
    assert rows["lm_head"].comm_bytes == 0  # tied: its weight is transformer.wte's


def test_tensor_parallel_bytes_and_tp_local_shards() -> None:
    _, sc = estimate_sharded(_workload("hf:gpt2", GPT2), ShardingSpec(fsdp=True, tp=2), 4)
    assert (sc.dp, sc.tp) == (2, 2)
    act = BATCH * SEQ * 64 * 4  # every parallel layer of GPT-2 all-reduces hidden-sized
    tp = {(c.owner, c.phase): c for c in sc.collectives if c.group == "tp"}
    assert set(tp) == {(f"transformer.h.{i}.{n}", ph) for i in (0, 1) for n, ph in (
        ("attn.c_attn", "backward"), ("attn.c_proj", "forward"),
        ("mlp.c_fc", "backward"), ("mlp.c_proj", "forward"))}
    for c in tp.values():
        assert c.kind == "all_reduce" and c.bytes == act and c.wire_bytes == act  # 2(2-1)/2
    # A block's gather: its TP-local parameters.  Conv1D weights are (in, out): the fused
    # q/k/v and c_fc split their columns, the row-wise c_proj its rows (its bias whole).
    local = (64 * 96 + 96) + (32 * 64 + 64) + (64 * 128 + 128) + (128 * 64 + 64) + 4 * 64
    gather = next(c for c in sc.collectives
                  if c.owner == "transformer.h.0" and c.kind == "all_gather")
    assert gather.bytes == local * 4 and gather.ranks == 2


def test_compute_is_divided_where_tensor_parallelism_divides_it() -> None:
    cost, sc = estimate_sharded(_workload("hf:tinyllama-1.1b", LLAMA),
                                ShardingSpec(fsdp=True, tp=2), 4, dp_link=Link(100),
                                device=get_profile("h100"))
    counted = {r.name: r.predicted for r in cost.layers}
    rows = {r.name: r for r in sc.layers}
    for name, split in (("model.layers.0.self_attn.q_proj", 2), ("model.layers.0.self_attn", 2),
                        ("model.layers.0.mlp.act_fn", 2), ("model.layers.0.input_layernorm", 1),
                        ("lm_head", 1)):
        p = counted[name]
        assert p is not None
        assert rows[name].forward_s == pytest.approx(p.forward_s / split), name
        assert rows[name].backward_s == pytest.approx(p.backward_s / split), name
    # The update: the quarter of q_proj's 64 x 64 weight a rank holds (TP 2, then FSDP 2).
    q = counted["model.layers.0.self_attn.q_proj"]
    assert q is not None
    assert rows["model.layers.0.self_attn.q_proj"].update_s == pytest.approx(q.update_s / 4)
    assert sc.compute_source == "roofline: h100" and sc.tp_link is not None
    assert "NVLink" in sc.tp_link.source  # the profile's intra-node link for the TP group
    assert sc.exposed_s is not None and sc.step_s is not None
    assert sum(r.exposed_s or 0 for r in sc.layers) == pytest.approx(sc.exposed_s)
    assert sum(r.comm_s or 0 for r in sc.layers) == pytest.approx(sc.comm_s)
    tp_exposed = sum(c.exposed_s or 0 for c in sc.collectives if c.group == "tp")
    assert tp_exposed == pytest.approx(sum(c.seconds or 0 for c in sc.collectives
                                           if c.group == "tp"))  # all of it


def test_json_round_trip(gpt2_fsdp: ShardedCost) -> None:
    d = json.loads(gpt2_fsdp.to_json())
    assert d["schema"] == "layertime.sharded/1" and d["headline"] == gpt2_fsdp.headline()
    assert ShardedCost.from_dict(d) == gpt2_fsdp
    assert d["collective_kinds"]["all_gather"]["count"] == 5


def test_what_if_of_a_measured_run() -> None:
    run = factories.transformer_run()
    sc = predict_run(run, ShardingSpec(fsdp=True), 8, workload=_workload("hf:gpt2", GPT2),
                     dp_link=Link(10))
    rows = {r.name: r for r in sc.layers}
    scale = run.step_s / run.profiled_step_s
    c_fc = rows["transformer.h.1.mlp.c_fc"]
    assert c_fc.forward_s == pytest.approx(3e-3 * scale)
    # c_fc's 64 x 256 weight and 256 bias: an eighth of each on a rank (FSDP over 8).
    assert c_fc.update_s == pytest.approx(2e-3 * scale / 8)
    assert sc.compute_source == "measured run" and sc.measured_step_s is None
    assert "at 8 ranks (FSDP over 8 ranks) over 10 Gbit/s the exposed communication" \
        in sc.headline()
    # Measured on the same layout: each layer carries its measured communication.
    measured_rows = [factories.layer(r.name, r.kind, r.forward_s, r.backward_s, r.update_s,
                                     r.params, type=r.type, comm_s=1e-3 if r.params else 0.0,
                                     comm_exposed_s=4e-4 if r.params else 0.0)
                     for r in run.layers]
    sharded_run = factories.run(measured_rows, model="hf:gpt2", batch_size=BATCH,
                                input_shape=(SEQ,), seq_len=SEQ, world_size=8)
    same = predict_run(sharded_run, ShardingSpec(fsdp=True), 8,
                       workload=_workload("hf:gpt2", GPT2), dp_link=Link(10),
                       measured=ShardingSpec(fsdp=True))
    got = {r.name: r for r in same.layers}
    assert got["transformer.wte"].measured_comm_s == 1e-3
    assert got["transformer.wte"].measured_exposed_s == 4e-4
    assert same.measured_step_s == sharded_run.step_s


# -- the command line --------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["cost", *argv, "--no-store"])
    out, err = capsys.readouterr()
    return rc, out, err


def _tiny(config: list[str]) -> list[str]:
    return [a for c in config for a in ("--config", c)] + ["-b", str(BATCH), "--seq-len",
                                                          str(SEQ)]


def test_cli_prints_the_what_if_and_writes_its_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "sharded.json"
    rc, out, err = _cli(capsys, "hf:tinyllama-1.1b", *_tiny(LLAMA), "--fsdp", "--nproc", "4",
                        "--tp", "2", "--link-gbps", "100", "--device-profile", "h100",
                        "--comm-json", str(path), "--width", "80")
    assert rc == 0, err
    assert "at 4 ranks (FSDP 2 x TP 2) over 100 Gbit/s (TP: 3,600 Gbit/s) the exposed " \
           "communication would be" in " ".join(out.split())  # prose wraps at 80
    assert "TP all-reduce bwd" in out and "model.layers.*.mlp.down_proj" in out
    assert all(len(line) <= 80 for line in out.splitlines()
               if line.startswith(" ") and ("│" not in line))
    d = json.loads(path.read_text())
    assert d["schema"] == "layertime.sharded/1" and d["world_size"] == 4 and d["tp"] == 2
    assert str(path) in err  # announced


def test_cli_what_if_of_a_run_takes_the_runs_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "run.json"
    factories.transformer_run().save(path)
    rc, out, err = _cli(capsys, "--run", str(path), *[a for c in GPT2 for a in ("--config", c)],
                        "--fsdp", "--nproc", "64", "--link-gbps", "10", "-q")
    assert rc == 0, err
    assert "at 64 ranks (FSDP over 64 ranks) over 10 Gbit/s the exposed communication " \
           "would be" in out and "chiefly" in out


def test_nproc_without_sharding_is_ddps_what_if(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _cli(capsys, "alexnet", "-b", "2", "--image-size", "64", "--nproc", "4",
                        "--link-gbps", "10", "-q")
    assert rc == 0, err
    assert "on 4 workers at 10 Gbit/s: all-reduce" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--fsdp", "--nproc", "4", "--tp", "3"], "--tp 3 does not divide 4 ranks"),
    (["--tp", "2", "--nproc", "4"], "add --fsdp for 2-D"),
    (["--fsdp"], "--fsdp needs --nproc N"),
    (["--fsdp", "--nproc", "4", "--workers", "8"], "give one"),
    (["--no-reshard-after-forward", "--nproc", "2", "--link-gbps", "1"], "needs --fsdp"),
    (["--tp", "8"], "does not divide the model's num_attention_heads=4"),
    (["--fsdp", "--nproc", "2", "--link-latency-us", "3"], "--link-latency-us needs"),
])
def test_bad_combinations_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    rc, out, err = _cli(capsys, "hf:gpt2", *_tiny(GPT2), *argv)
    assert rc == 2 and message in err and err.count("\n") == 1, err


def test_a_model_without_a_plan_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _cli(capsys, "alexnet", "-b", "2", "--image-size", "64", "--tp", "2")
    assert rc == 2 and "no tensor-parallel plan for alexnet" in err and err.count("\n") == 1


def test_a_runs_own_sharding_is_read_as_a_spec_or_its_dict() -> None:
    from types import SimpleNamespace

    spec = ShardingSpec(fsdp=True, tp=2, reshard_after_forward=False)
    assert sharding_of_run(SimpleNamespace(sharding=spec)) == spec
    assert sharding_of_run(SimpleNamespace(sharding=spec.to_dict())) == spec
    assert sharding_of_run(SimpleNamespace(sharding=None)) is None
    assert sharding_of_run(factories.transformer_run()) is None  # unsharded: none


def test_a_run_measured_on_the_cpu_hides_no_fsdp_collective() -> None:
    """FSDP2's collectives block the training thread on the CPU (no streams to prefetch
    on): a what-if of a CPU run predicts all of them exposed; a CUDA run's may hide."""
    from dataclasses import replace

    run = factories.transformer_run()
    spec, link = ShardingSpec(fsdp=True), Link(10)
    cpu = predict_run(run, spec, 8, workload=_workload("hf:gpt2", GPT2), dp_link=link)
    gpu = predict_run(replace(run, device="cuda:0"), spec, 8,
                      workload=_workload("hf:gpt2", GPT2), dp_link=link)
    for c in cpu.collectives:
        assert c.exposed_s == pytest.approx(c.seconds)
    assert any("block the training thread" in n for n in cpu.notes)
    assert gpu.exposed_s is not None and cpu.exposed_s is not None
    assert gpu.exposed_s < cpu.exposed_s
