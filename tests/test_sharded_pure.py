"""Sharded attribution as a pure function: FSDP2's ranges and collective ops in hand-made
events, charged to units and layers, exposed and hidden, rows adding up.

Times are microseconds on a fake clock; charges come back in seconds.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from layertime.measure.attribute import (
    CollectiveCall,
    StepCharges,
    attribute_step,
    collective_kind,
    fsdp_owner_of,
)
from layertime.measure.events import OpEvent
from layertime.measure.parallel.sharded_comm import charge_collectives, match_backend
from tests.test_attribute_pure import MAIN, Trace, check_sums, us

GLOO = 7  # gloo's worker thread


def _charged(t: Trace, step: OpEvent, unit_layers, unit_module=None) -> StepCharges:
    c = attribute_step(step, t.events)
    check_sums(c)
    out = charge_collectives(c, unit_layers, unit_module or {})
    check_sums(out)
    return out


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("FSDP::all_gather (layers.0)", ("comm", "unit", "layers.0", "all_gather", "forward")),
        ("FSDP::all_gather", ("comm", "unit", "", "all_gather", "forward")),
        ("FSDP::all_gather_copy_out (h.1)", ("comm", "unit", "h.1", "all_gather", "forward")),
        ("FSDP::backward_prefetch for h.2", ("comm", "unit", "h.2", "all_gather", "forward")),
        ("FSDP::post_backward_reduce (h.0)", ("comm", "unit", "h.0", "reduce_scatter", "forward")),
        ("FSDP::post_backward_rs_wait ()", ("comm", "unit", "", "reduce_scatter", "forward")),
        ("FSDP::pre_forward (a.b) [pg=2]", ("comm", "unit", "a.b", "fsdp", "forward")),
        ("FSDP::root_pre_forward", ("comm", "unit", "", "fsdp", "forward")),
    ],
)
def test_fsdp_range_names(name: str, owner: tuple) -> None:
    assert fsdp_owner_of(name, "forward") == owner


def test_fsdp_owner_of_other_names() -> None:
    assert fsdp_owner_of("aten::mm", "forward") is None


@pytest.mark.parametrize(
    ("name", "kind"),
    [("c10d::_allgather_base_", "all_gather"), ("c10d::_reduce_scatter_base_", "reduce_scatter"),
     ("_c10d_functional::all_reduce", "all_reduce"), ("c10d::allreduce_", "all_reduce"),
     ("_c10d_functional::all_gather_into_tensor", "all_gather"),
     ("c10d::alltoall_base_", "all_to_all"), ("c10d::broadcast_", "broadcast"),
     ("c10d::barrier", "other")],
)
def test_collective_kinds(name: str, kind: str) -> None:
    assert collective_kind(name) == kind


def _fsdp_step() -> tuple[Trace, OpEvent]:
    """One step of a 2-unit FSDP model: unit ``b`` (module 2, layers 3 and 4) inside the
    root (module 0, layer 1).  Forward: the root's all-gather, ``b``'s all-gather, compute;
    backward: ``b``'s reduce-scatter; gloo runs each collective on its thread."""
    t = Trace()
    step = t.step(0, 1000)
    root = t.module(0, 0, 400, step)
    ag = t.ev("FSDP::all_gather", 10, 110, root)
    t.ev("fsdp::all_gather_copy_in", 10, 20, ag)
    t.ev("c10d::_allgather_base_", 20, 30, ag)
    t.ev("gloo:all_gather", 25, 100, thread=GLOO)
    t.module(1, 110, 150, root)
    b = t.module(2, 150, 400, root)
    pre = t.ev("FSDP::pre_forward (b)", 150, 260, b)
    ag_b = t.ev("FSDP::all_gather (b)", 155, 250, pre)
    t.ev("c10d::_allgather_base_", 160, 170, ag_b)
    t.ev("gloo:all_gather", 165, 245, thread=GLOO)
    t.module(3, 260, 330, b)
    t.module(4, 330, 400, b)
    bwd = t.phase("backward", 400, 900, step)
    node = t.node("MmBackward0", 1, 400, 600, bwd)
    red = t.ev("FSDP::post_backward_reduce (b)", 600, 800, bwd)
    t.ev("c10d::_reduce_scatter_base_", 610, 620, red)
    t.ev("gloo:all_reduce", 615, 790, thread=GLOO)
    del node
    return t, step


def _fsdp_maps() -> tuple[dict[str, dict[int, int]], dict[str, int]]:
    return {"b": {3: 300, 4: 100}, "": {1: 50}}, {"b": 2, "": 0}


def test_fsdp_collectives_go_to_their_units_layers_by_elements() -> None:
    t, step = _fsdp_step()
    c = _charged(t, step, *_fsdp_maps())
    # Unit b: all-gather (95 µs on the thread) + reduce-scatter (200 µs), 3:1 by elements.
    assert c.comm[3].exposed_s == us(0.75 * (95 + 200) + 0.75 * 15)
    assert c.comm[4].exposed_s == us(0.25 * (95 + 200) + 0.25 * 15)
    # The root's all-gather (100 µs) to its only layer with parameters.
    assert c.comm[1].exposed_s == us(100)
    # Module 2's forward keeps only its own time: the pre-forward hook is FSDP's.
    assert c.modules[(2, "forward")] == us(0)
    # All of it is exposed (the thread was in communication while gloo ran).
    assert sum(ch.hidden_s for ch in c.collective_charges) == pytest.approx(0.0)
    assert c.step["comm"] == pytest.approx(sum(x.exposed_s for x in c.comm.values()))


def test_fsdp_calls_count_bytes_and_backend_time() -> None:
    t, step = _fsdp_step()
    t.events = [replace(e, nbytes=4000) if e.name.startswith("c10d::") else e for e in t.events]
    c = _charged(t, step, *_fsdp_maps())
    rows = {ch.key: ch for ch in c.collective_charges}
    ag_b = rows[("unit", "b", "all_gather", "forward")]
    assert (ag_b.count, ag_b.nbytes) == (1, 4000)
    assert ag_b.busy_s == us(80)
    rs = rows[("unit", "b", "reduce_scatter", "backward")]
    assert rs.count == 1 and rs.busy_s == us(175)
    # The pre-forward hook's own time is FSDP's bookkeeping, with no call of its own.
    book = rows[("unit", "b", "fsdp", "forward")]
    assert book.count == 0 and book.exposed_s == us(15)
    assert sum(ch.count for ch in c.collective_charges) == 3
    # Every layer's bytes add up to the calls' bytes.
    assert sum(c.comm_bytes.values()) == pytest.approx(12000, abs=2)


def test_tp_collective_is_the_issuing_layers_and_partly_hidden() -> None:
    """A tensor-parallel layer launches an all-reduce (async, functional), computes, then
    waits: the wait is exposed, the rest of gloo's time hidden."""
    t = Trace()
    step = t.step(0, 500)
    layer = t.module(5, 0, 300, step)
    t.ev("aten::mm", 0, 50, layer)
    ar = t.ev("_c10d_functional::all_reduce", 50, 70, layer)
    t.ev("c10d::allreduce_", 55, 65, ar)
    t.ev("aten::add", 70, 170, layer)
    t.ev("_c10d_functional::wait_tensor", 170, 200, layer)
    t.ev("gloo:all_reduce", 60, 200, thread=GLOO)
    c = _charged(t, step, {})
    (ch,) = c.collective_charges
    assert ch.key == ("layer", 5, "all_reduce", "forward")
    assert ch.count == 1  # the nested c10d op is the same call
    assert ch.exposed_s == us(20 + 30)
    assert ch.hidden_s == us(140 - 10 - 30)  # gloo's 140 µs less the thread's 40 in comm
    assert c.comm[5].comm_s == us(50 + 100)
    assert c.modules[(5, "forward")] == us(50 + 100 + 100)  # mm, add, its own 200-300
    assert c.step["comm"] == us(50)


def test_tp_backward_collective_goes_to_the_layer_that_made_the_node() -> None:
    t = Trace()
    step = t.step(0, 500)
    layer = t.module(5, 0, 100, step)
    t.ev("aten::mm", 0, 100, layer, seq=42)
    bwd = t.phase("backward", 100, 400, step)
    node = t.node("MmBackward0", 42, 100, 300, bwd)
    ar = t.ev("_c10d_functional::all_reduce", 150, 160, node)
    del ar
    t.ev("_c10d_functional::wait_tensor", 160, 250, node)
    c = _charged(t, step, {})
    (ch,) = c.collective_charges
    assert ch.key == ("layer", 5, "all_reduce", "backward")
    assert ch.exposed_s == us(100)


def test_collective_in_a_step_row_stays_there() -> None:
    t = Trace()
    step = t.step(0, 300)
    upd = t.ev("Optimizer.step#SGD.step", 100, 300, step)
    t.ev("c10d::allreduce_", 150, 200, upd)
    c = _charged(t, step, {})
    assert c.step["update"] == us(200)
    assert c.step.get("comm", 0.0) == pytest.approx(0.0)
    assert [ch.key for ch in c.collective_charges] == [("step", "update", "all_reduce", "forward")]


def test_ddp_hook_range_keeps_its_own_charging() -> None:
    t = Trace()
    step = t.step(0, 300)
    hook = t.ev("layertime::comm", 100, 200, step)
    t.ev("c10d::allreduce_", 120, 150, hook)
    c = attribute_step(step, t.events)
    assert c.collectives == {} and c.collective_calls == []
    assert c.step["comm"] == us(100)


def test_backend_events_match_calls_in_order_and_kind() -> None:
    def call(kind: str, start: float) -> CollectiveCall:
        return CollectiveCall(("unit", "", kind, "forward"), start, start + 1, 0, "c10d::x")

    calls = [call("all_gather", 0), call("reduce_scatter", 10), call("all_gather", 20)]
    busy = [("gloo:all_gather", 2, 5), ("gloo:all_reduce", 12, 15), ("gloo:all_gather", 21, 30)]
    assert match_backend(calls, busy) == {0: [(2, 5)], 1: [(12, 15)], 2: [(21, 30)]}
    # A backend event that starts before any call of its kind is left unmatched.
    assert match_backend(calls[1:], [("gloo:all_gather", 5, 9)]) == {}


def test_a_functional_wait_is_charged_with_the_call_it_waits_for() -> None:
    """Row-wise TP returns an async tensor: the wait happens in the block, at its first
    use, and belongs to the row-wise layer's all-reduce."""
    t = Trace()
    step = t.step(0, 500)
    block = t.module(2, 0, 400, step)
    proj = t.module(3, 0, 100, block)
    t.ev("aten::mm", 0, 60, proj)
    t.ev("_c10d_functional::all_reduce", 60, 80, proj)
    t.ev("_c10d_functional::wait_tensor", 150, 300, block)
    t.ev("gloo:all_reduce", 70, 300, thread=GLOO)
    c = _charged(t, step, {})
    (ch,) = c.collective_charges
    assert ch.key == ("layer", 3, "all_reduce", "forward")
    assert ch.exposed_s == us(20 + 150)
    assert ch.hidden_s == us(230 - 10 - 150)
    assert 2 not in c.comm


def test_cuda_comm_kernels_beside_compute_are_hidden() -> None:
    """On CUDA rows are kernel times: an all-gather kernel of 40 µs of which 30 overlap a
    compute kernel is 10 µs exposed (in the rows) and 30 hidden."""
    from layertime.measure.events import KernelSpan, comm_exposed_fraction

    spans = [KernelSpan(0, 60, 7), KernelSpan(30, 70, 13, comm=True)]
    f = comm_exposed_fraction(spans, 0, 100)
    assert f == pytest.approx(10 / 40)
    t = Trace()
    step = t.step(0, 100)
    m = t.module(1, 0, 50, step)
    t.ev("aten::mm", 0, 10, m, device_us=60.0)
    ag = t.ev("FSDP::all_gather (b)", 10, 20, m)
    t.ev("c10d::_allgather_base_", 11, 12, ag, device_us=40.0)
    c = attribute_step(step, t.events, device_time=True, step_wall_s=100e-6,
                       device_busy_s=70e-6, comm_exposed_fraction=f)
    check_sums(c)
    out = charge_collectives(c, {"b": {1: 10}}, {"b": 1})
    check_sums(out)
    (ch,) = [x for x in out.collective_charges if x.count]
    assert ch.exposed_s == us(10) and ch.hidden_s == us(30) and ch.busy_s == us(40)
    assert out.modules[(1, "forward")] == us(60)
    assert out.step["unattributed"] == us(30)  # idle: 100 µs less 60 compute and 10 exposed


def test_no_comm_kernels_no_fraction() -> None:
    from layertime.measure.events import KernelSpan, comm_exposed_fraction

    assert comm_exposed_fraction([KernelSpan(0, 60, 7)], 0, 100) is None
