"""The sharded what-if's pure parts: FSDP2's padded bytes, the collectives of hand-made
layouts, the timeline of hand-made segments and FSDP2's schedule on it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layertime.cost.sharded.collectives import (
    LayerLayout,
    ParamLayout,
    plan_collectives,
    wire_bytes,
)
from layertime.cost.sharded.overlap import Segment, simulate
from layertime.cost.sharded.predict import LayerCompute, StepCompute, predict
from layertime.errors import LayertimeError
from layertime.results.parallel.comm import Link
from layertime.results.cost.sharded import ShardedCost, pattern_of

#: 8 Gbit/s is 10^9 bytes/s: a ring over 2 ranks moves half of a tensor, so 2e9 bytes take 1 s.
GB_PER_S = Link(8.0, 0.0)


def test_fsdp_pads_the_first_dimension_to_the_data_parallel_size() -> None:
    p = ParamLayout((5, 3))
    assert p.gathered(2, 1) == 6 * 3 and p.local(2, 1) == 9
    assert p.gathered(5, 1) == 15  # divides: no padding
    assert ParamLayout((7,)).gathered(4, 1) == 8
    assert ParamLayout(()).gathered(4, 1) == 4  # a scalar: one element, padded


def test_tensor_parallelism_splits_its_dimension_before_fsdp_pads() -> None:
    col = ParamLayout((12, 8), tp_dim=0)  # nn.Linear weight, column-wise: rows split
    row = ParamLayout((12, 8), tp_dim=1)
    assert col.local_shape(2) == (6, 8) and row.local_shape(2) == (12, 4)
    assert col.gathered(4, 2) == 8 * 8  # 6 rows padded to 8
    assert row.gathered(4, 2) == 12 * 4


def _layers(reshard_root_params: int = 10) -> list[LayerLayout]:
    return [
        LayerLayout("", "other", "Net", ""),
        LayerLayout("emb", "embedding", "Embedding", "", (ParamLayout((reshard_root_params,)),)),
        LayerLayout("b0.fc", "linear", "Linear", "b0",
                    (ParamLayout((6, 4), 0), ParamLayout((6,), 0, trainable=False))),
        LayerLayout("b1.fc", "linear", "Linear", "b1", (ParamLayout((5, 4)),)),
    ]


@pytest.mark.parametrize("reshard", [True, False])
def test_fsdp_collectives_per_unit(reshard: bool) -> None:
    planned = plan_collectives(_layers(), ("b0", "b1", ""), dp=4, tp=1, fsdp=True,
                               reshard_after_forward=reshard, elem_bytes=2, tokens=1)
    got = {(p.collective.kind, p.collective.phase, p.collective.owner): p.collective.bytes
           for p in planned}
    # b0: weight 6x4 padded to 8x4 = 32, bias 6 -> 8: 40 elements gathered, 32 of them train.
    # b1: 5x4 padded to 8x4 = 32.  Root: 10 -> 12.
    want = {("all_gather", "forward", "b0"): 80, ("reduce_scatter", "backward", "b0"): 64,
            ("all_gather", "forward", "b1"): 64, ("reduce_scatter", "backward", "b1"): 64,
            ("all_gather", "forward", ""): 24, ("reduce_scatter", "backward", ""): 24}
    if reshard:  # gathered again for backward, never the root
        want |= {("all_gather", "backward", "b0"): 80, ("all_gather", "backward", "b1"): 64}
    assert got == want
    for p in planned:
        c = p.collective
        assert c.group == "dp" and c.ranks == 4 and c.wire_bytes == c.bytes * 3 // 4
        assert sum(p.shares.values()) == c.bytes


def test_one_data_parallel_rank_issues_no_fsdp_collective() -> None:
    assert plan_collectives(_layers(), ("b0", "b1", ""), dp=1, tp=1, fsdp=True,
                            reshard_after_forward=True, elem_bytes=4, tokens=1) == ()


def test_tensor_parallel_all_reduces_are_activation_sized() -> None:
    layers = [
        LayerLayout("up", "linear", "Linear", "", (ParamLayout((32, 8), 0),),
                    tp_style="colwise", features=(8, 32)),
        LayerLayout("down", "linear", "Linear", "", (ParamLayout((8, 32), 1),),
                    tp_style="rowwise", features=(32, 8), calls=2),
    ]
    planned = plan_collectives(layers, ("",), dp=1, tp=4, fsdp=False,
                               reshard_after_forward=True, elem_bytes=4, tokens=6)
    got = [(p.collective.kind, p.collective.phase, p.collective.owner, p.collective.bytes,
            p.collective.wire_bytes) for p in planned]
    # Column-wise: its input gradient (6 tokens x 8 in features) in backward; row-wise: its
    # output (6 x 8 out features) in forward, once per call.  Ring all-reduce: 2(n-1)/n.
    assert got == [("all_reduce", "backward", "up", 6 * 8 * 4, 2 * 3 * 192 // 4),
                   ("all_reduce", "forward", "down", 2 * 6 * 8 * 4, 2 * 3 * 384 // 4)]
    assert wire_bytes("all_gather", 100, 1) == 0


# -- the timeline ------------------------------------------------------------------


def test_a_prefetched_gather_hides_behind_the_unit_before() -> None:
    # Three units of 1 s compute, all-gathers of 0.5 s, each issued as the one before starts.
    segs = [Segment("u0", 1.0, waits=(0,), issue_start=(0, 1)),
            Segment("u1", 1.0, waits=(1,), issue_start=(2,)),
            Segment("u2", 1.0, waits=(2,))]
    t = simulate(segs, [0.5, 0.5, 0.5])
    assert t.exposed_s == (0.5, 0.0, 0.0)
    assert t.end_s == 3.5 and t.compute_s == 3.0
    assert t.comm_start_s == (0.0, 0.5, 1.5)


def test_gathers_slower_than_compute_are_exposed_by_the_difference() -> None:
    segs = [Segment("u0", 1.0, waits=(0,), issue_start=(0, 1)),
            Segment("u1", 1.0, waits=(1,), issue_start=(2,)),
            Segment("u2", 1.0, waits=(2,))]
    t = simulate(segs, [2.0, 2.0, 2.0])
    # AG0 [0,2]; u0 [2,3]; AG1 [2,4]; u1 [4,5]; AG2 issued at 3, runs [4,6]; u2 [6,7].
    assert t.segment_start_s == (2.0, 4.0, 6.0)
    assert t.exposed_s == (2.0, 1.0, 1.0) and t.end_s == 7.0


def test_collectives_run_one_at_a_time_in_issue_order() -> None:
    segs = [Segment("a", 1.0, issue_end=(0, 1)), Segment("b", 0.5), Segment("c", 0.0, (1,))]
    t = simulate(segs, [1.0, 1.0])
    assert t.comm_start_s == (1.0, 2.0)
    # c waits for the second until 3: idle [1.5, 3] while the first ends (0.5) and the
    # second runs (1.0).
    assert t.exposed_s == (0.5, 1.0) and t.end_s == 3.0


def test_waiting_for_a_collective_never_issued_is_an_error() -> None:
    with pytest.raises(LayertimeError, match="never issued"):
        simulate([Segment("a", 1.0, waits=(0,))], [1.0])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_exposed_time_is_the_time_compute_waited(data: st.DataObject) -> None:
    n_ops = data.draw(st.integers(0, 6))
    comm = data.draw(st.lists(st.floats(0, 3), min_size=n_ops, max_size=n_ops))
    n_segs = data.draw(st.integers(1, 6))
    issue_at = [data.draw(st.integers(0, n_segs - 1)) for _ in range(n_ops)]
    at_end = [data.draw(st.booleans()) for _ in range(n_ops)]
    segs = []
    for s in range(n_segs):
        ready = [i for i in range(n_ops)
                 if issue_at[i] < s or (issue_at[i] == s and not at_end[i])]
        waits = tuple(data.draw(st.lists(st.sampled_from(ready), max_size=2))) if ready else ()
        segs.append(Segment(str(s), data.draw(st.floats(0, 3)), waits,
                            tuple(i for i in range(n_ops) if issue_at[i] == s and not at_end[i]),
                            tuple(i for i in range(n_ops) if issue_at[i] == s and at_end[i])))
    t = simulate(segs, comm)
    assert math.isclose(sum(t.exposed_s), t.end_s - t.compute_s, abs_tol=1e-9)
    assert all(0 <= e <= c + 1e-9 for e, c in zip(t.exposed_s, comm))


# -- FSDP2's schedule on the timeline ---------------------------------------------------


def _fsdp_step(reshard: bool = True) -> ShardedCost:
    # Every unit's gathered parameters are 2e9 bytes (float32): 1 s per collective on a
    # 2-rank ring at 10^9 bytes/s.  Root layers before the blocks ("emb") and after ("head").
    n = 500_000_000
    layers = [
        LayerLayout("", "other", "Net", ""),
        LayerLayout("emb", "embedding", "Embedding", "", (ParamLayout((n,)),)),
        LayerLayout("b0", "linear", "Linear", "b0", (ParamLayout((n,)),)),
        LayerLayout("b1", "linear", "Linear", "b1", (ParamLayout((n,)),)),
        LayerLayout("head", "linear", "Linear", ""),
    ]
    compute = StepCompute({"b0": LayerCompute(1.0, 2.0), "b1": LayerCompute(1.0, 2.0)},
                          source="hand-made")
    return predict("net", layers, ("b0", "b1", ""), world_size=2, dp=2, tp=1, fsdp=True,
                   reshard_after_forward=reshard, batch_size=1, seq_len=None,
                   dtype="float32", elem_bytes=4, dp_link=GB_PER_S, tp_link=None,
                   compute=compute)


def test_fsdp_schedule_on_a_hand_made_step() -> None:
    sc = _fsdp_step()
    by = {(c.kind, c.phase, c.owner): c for c in sc.collectives}
    assert all(math.isclose(c.seconds or 0, 1.0) for c in sc.collectives)
    # Forward: the root's gather [0,1] and b0's [1,2] wait; b1's [2,3] hides behind b0 [2,3].
    # Backward: b1's gather, issued as the root's tail starts (t=4), is waited for [4,5];
    # b0's [5,6] hides behind b1 [5,7]; b1's reduce-scatter [7,8] behind b0 [7,9]; b0's
    # [9,10] and the root's [10,11] are waited for by the update.
    exposed = {k: c.exposed_s for k, c in by.items()}
    assert exposed == pytest.approx({
        ("all_gather", "forward", ""): 1.0, ("all_gather", "forward", "b0"): 1.0,
        ("all_gather", "forward", "b1"): 0.0, ("all_gather", "backward", "b1"): 1.0,
        ("all_gather", "backward", "b0"): 0.0, ("reduce_scatter", "backward", "b1"): 0.0,
        ("reduce_scatter", "backward", "b0"): 1.0, ("reduce_scatter", "backward", ""): 1.0,
    })
    assert sc.compute_s == 6.0 and sc.exposed_s == pytest.approx(5.0)
    assert sc.step_s == pytest.approx(11.0) and sc.hidden_s == pytest.approx(3.0)
    # Charged to layers: each unit's collectives to its one layer with parameters.
    rows = {r.name: r for r in sc.layers}
    assert rows["emb"].exposed_s == pytest.approx(2.0)
    assert rows["b0"].exposed_s == pytest.approx(2.0) and rows["b1"].exposed_s == pytest.approx(1.0)
    assert sum(r.comm_bytes for r in sc.layers) == sc.comm_bytes
    # Ties in exposed time go to the group with more communication (b0: 3 s, the root: 2 s).
    assert sc.chief() == [("b0", pytest.approx(0.4)), ("emb", pytest.approx(0.4))]


def test_without_reshard_after_forward_backward_gathers_nothing() -> None:
    sc = _fsdp_step(reshard=False)
    assert not [c for c in sc.collectives if c.kind == "all_gather" and c.phase == "backward"]
    # Forward as before (2 s exposed); backward: b1 [4,6] waits for nothing, its
    # reduce-scatter [6,7] hides behind b0 [6,8]; b0's [8,9] and the root's [9,10] are
    # waited for by the update.
    assert sc.exposed_s == pytest.approx(4.0) and sc.step_s == pytest.approx(10.0)


def test_without_compute_or_link_what_cannot_be_known_is_none() -> None:
    sc = _fsdp_step()
    layers = [LayerLayout("a", "linear", "Linear", "a", (ParamLayout((4,)),)),
              LayerLayout("", "other", "Net", "")]
    bare = predict("net", layers, ("a", ""), world_size=2, dp=2, tp=1, fsdp=True,
                   reshard_after_forward=True, batch_size=1, seq_len=None, dtype="float32",
                   elem_bytes=4, dp_link=None, tp_link=None)
    assert bare.comm_s is None and bare.exposed_s is None and bare.step_s is None
    assert "times need --link-gbps" in bare.headline()
    timed = predict("net", layers, ("a", ""), world_size=2, dp=2, tp=1, fsdp=True,
                    reshard_after_forward=True, batch_size=1, seq_len=None, dtype="float32",
                    elem_bytes=4, dp_link=GB_PER_S, tp_link=None)
    assert timed.comm_s is not None and timed.exposed_s is None
    assert "needs --device-profile NAME or --run" in timed.headline()
    assert "at 2 ranks (FSDP over 2 ranks) over 8 Gbit/s the exposed communication would be " \
           "5,000 ms per step" in sc.headline()


def test_layers_are_grouped_across_blocks() -> None:
    assert pattern_of("model.layers.12.mlp.down_proj") == "model.layers.*.mlp.down_proj"
    assert pattern_of("features.0") == "features.*" and pattern_of("lm_head") == "lm_head"
    assert pattern_of("h.1.attn.c_attn") == "h.*.attn.c_attn"
