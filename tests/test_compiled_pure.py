"""Attribution of compiled steps as a pure function: hand-made events, exact answers.

The events imitate what ``torch.profiler`` records for a ``torch.compile``d
training step (see /work/notes/compile.md): a ``Torch-Compiled Region`` per
compiled frame, a ``## Call CompiledFxGraph ##`` range per graph call whose
children are the kernels, the backward graph under the autograd node
``CompiledFunctionBackward`` (carrying the forward op's sequence number).
Times are microseconds; charges come back in seconds.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layertime.measure.compiled.attribute import (
    CALL_GRAPH,
    attribute_compiled_step,
    strip_graph_prefix,
)
from layertime.measure.compiled.capture import ModuleNames, call_sites, module_path
from layertime.measure.compiled.graphs import CallSite, GraphInfo, NodeInfo
from layertime.measure.events import BACKWARD_NODE, MODULE, OPTIMIZER_STEP, PHASE, STEP, OpEvent
from layertime.modules import ModuleTable

MAIN = 1
INDEX = {"": 0, "conv": 1, "bn": 2, "relu": 3, "fc": 4}


class Trace:
    def __init__(self) -> None:
        self.events: list[OpEvent] = []

    def ev(self, name: str, start: float, end: float, parent: OpEvent | None = None, *,
           seq: int = -1, fwd_thread: int = 0, device_us: float = 0.0) -> OpEvent:
        e = OpEvent(len(self.events) + 1, name, MAIN, start, end,
                    parent.id if parent is not None else None, seq, fwd_thread, device_us)
        self.events.append(e)
        return e


def gen(kernel: str, *nodes: str) -> CallSite:
    return CallSite(kernel, kernel, True, nodes)


def ext(kernel: str, event: str, *nodes: str) -> CallSite:
    return CallSite(kernel, event, False, nodes)


#: Forward graph of conv -> bn -> relu -> flatten -> fc (as Inductor lowers it on the CPU).
FWD = GraphInfo(
    "0/0",
    "forward",
    (
        ext("extern_kernels.convolution", "aten::convolution", "convolution"),
        gen("cpp_fused_bn_relu_0", "var_mean", "mul", "relu"),
        ext("extern_kernels.addmm", "aten::addmm", "view", "addmm"),
    ),
    {
        "convolution": NodeInfo("conv", "c", 100.0, "aten::convolution"),
        "var_mean": NodeInfo("bn", "b", 30.0, "aten::var_mean"),
        "mul": NodeInfo("bn", "b", 30.0, "aten::mul"),
        "relu": NodeInfo("relu", "r", 20.0, "aten::relu"),
        "view": NodeInfo("", None, 0.0, "aten::view"),
        "addmm": NodeInfo("fc", "f", 50.0, "aten::addmm"),
    },
)
BWD = GraphInfo(
    "0/0",
    "backward",
    (
        ext("extern_kernels.mm", "aten::mm", "mm"),
        gen("cpp_fused_threshold_backward_native_batch_norm_backward_0", "where", "sum_1", "mul_2"),
        ext("torch.ops.aten.convolution_backward.default", "aten::convolution_backward",
            "where", "convolution_backward"),
    ),
    {
        "mm": NodeInfo("fc", "f", 10.0, "aten::mm"),
        "where": NodeInfo("relu", "r", 40.0, "aten::where"),
        "sum_1": NodeInfo("bn", "b", 30.0, "aten::sum"),
        "mul_2": NodeInfo("bn", "b", 30.0, "aten::mul"),
        "convolution_backward": NodeInfo("conv", "c", 90.0, "aten::convolution_backward"),
    },
)


def chain_step(t: Trace, *, extra_kernel: bool = False) -> OpEvent:
    """One step: zero_grad, compiled forward (under the wrapper's range), loss, backward, update."""
    step = t.ev(STEP, 0, 1000)
    t.ev(f"{PHASE}zero_grad", 0, 10, step)
    root = t.ev(f"{MODULE}0", 10, 400, step)
    t.ev("TorchDynamo Cache Lookup", 12, 20, root)
    region = t.ev("Torch-Compiled Region: 0/0", 20, 395, root)
    fn = t.ev("CompiledFunction", 30, 390, region, seq=7)
    call = t.ev(f"{CALL_GRAPH} None ##", 40, 380, fn)
    conv = t.ev("aten::convolution", 50, 200, call)
    t.ev("aten::mkldnn_convolution", 60, 190, conv)
    t.ev("graph_0_cpp_fused_bn_relu_0", 210, 310, call)
    if extra_kernel:
        t.ev("graph_0_cpp_fused_mystery_9", 312, 318, call)
    t.ev("aten::addmm", 320, 370, call)
    t.ev(f"{PHASE}loss", 400, 450, step)
    bwd = t.ev(f"{PHASE}backward", 450, 900, step)
    node = t.ev(f"{BACKWARD_NODE}CompiledFunctionBackward", 460, 850, bwd, seq=7, fwd_thread=MAIN)
    inner = t.ev("CompiledFunctionBackward", 461, 849, node, seq=7, fwd_thread=MAIN)
    bcall = t.ev(f"{CALL_GRAPH} None ##", 470, 840, inner)
    t.ev("aten::mm", 480, 530, bcall)
    t.ev("graph_0_cpp_fused_threshold_backward_native_batch_norm_backward_0", 540, 640, bcall)
    t.ev("aten::convolution_backward", 650, 830, bcall)
    acc = t.ev(f"{BACKWARD_NODE}torch::autograd::AccumulateGrad", 860, 880, bwd)
    t.ev("torch::autograd::AccumulateGrad", 861, 879, acc)
    t.ev(f"{OPTIMIZER_STEP}SGD.step", 900, 990, step)
    return step


def test_chain_charges_each_kernel_to_its_layers_and_phase() -> None:
    t = Trace()
    step = chain_step(t)
    charges, info = attribute_compiled_step(step, t.events, [FWD, BWD], module_index=INDEX)
    m = charges.modules
    assert m[(1, "forward")] == pytest.approx(150e-6)  # aten::convolution, inclusive
    assert m[(4, "forward")] == pytest.approx(50e-6)  # addmm (the view weighs nothing)
    # The fused bn+relu kernel (100 us) is split 60:20 by node weight.
    assert m[(2, "forward")] == pytest.approx(75e-6)
    assert m[(3, "forward")] == pytest.approx(25e-6)
    assert m[(4, "backward")] == pytest.approx(50e-6)
    # convolution_backward lists the fused relu node too; its own op's node wins.
    assert m[(1, "backward")] == pytest.approx(180e-6)
    assert m[(2, "backward")] == pytest.approx(60e-6)
    assert m[(3, "backward")] == pytest.approx(40e-6)
    assert (0, "forward") not in m  # the wrapper's own time is not the model's code
    assert charges.calls[1] == 1 and charges.calls[4] == 1
    assert info.placed_s == pytest.approx(630e-6)
    assert info.unplaced == {}
    assert info.accumulate_s == pytest.approx(20e-6)
    assert charges.step["loss"] == pytest.approx(50e-6)
    assert charges.step["update"] == pytest.approx(90e-6)


def test_rows_add_up_to_the_step_and_the_wrapper_is_a_row_of_its_own() -> None:
    t = Trace()
    step = chain_step(t)
    charges, info = attribute_compiled_step(step, t.events, [FWD, BWD], module_index=INDEX)
    assert charges.total_s() == pytest.approx(1000e-6)
    assert charges.step_s == pytest.approx(1000e-6)
    # The wrapper's own range (7 us outside the compiled regions) and the compiled
    # regions' time outside kernels (8 + 375 + 390 - 630) are guards and wrappers:
    # the compiled wrapper's row, not unattributed.
    assert info.wrapper_s == pytest.approx(150e-6)
    assert charges.step["compiled_wrapper"] == pytest.approx(150e-6)
    # unattributed: AccumulateGrad after the compiled backward, the step's own gaps
    # (10 us) and the backward range's time outside autograd nodes (40 us).
    assert charges.step["unattributed"] == pytest.approx((20 + 10 + 40) * 1e-6)


def test_fused_split_adds_up_to_the_group() -> None:
    t = Trace()
    step = chain_step(t)
    _, info = attribute_compiled_step(step, t.events, [FWD, BWD], module_index=INDEX)
    groups = {(f.kernel, f.phase): f for f in info.fused}
    assert set(groups) == {
        ("cpp_fused_bn_relu_0", "forward"),
        ("cpp_fused_threshold_backward_native_batch_norm_backward_0", "backward"),
    }
    for g in info.fused:
        assert sum(g.split.values()) == pytest.approx(g.time_s)
    fwd = groups[("cpp_fused_bn_relu_0", "forward")]
    assert fwd.time_s == pytest.approx(100e-6)
    assert set(fwd.split) == {"bn", "relu"}


def test_an_event_no_site_matches_stays_unattributed_by_name() -> None:
    t = Trace()
    step = chain_step(t, extra_kernel=True)
    charges, info = attribute_compiled_step(step, t.events, [FWD, BWD], module_index=INDEX)
    assert info.unplaced == {"cpp_fused_mystery_9": pytest.approx(6e-6)}
    assert charges.total_s() == pytest.approx(1000e-6)


def test_without_graphs_everything_compiled_is_unattributed_with_per_graph_totals() -> None:
    t = Trace()
    step = chain_step(t)
    charges, info = attribute_compiled_step(step, t.events, [], module_index=INDEX)
    assert not any(charges.modules.get((i, p)) for i in (1, 2, 3, 4) for p in ("forward", "backward"))
    assert info.placed_s == 0
    assert set(info.graphs) == {"0/0 forward", "0/0 backward"}
    assert info.unplaced == {
        "(graph 0/0 forward: no provenance)": pytest.approx(340e-6),
        "(graph 0/0 backward: no provenance)": pytest.approx(370e-6),
    }
    assert charges.total_s() == pytest.approx(1000e-6)


def test_graph_without_inductor_calls_gives_per_graph_totals_from_compiled_functions() -> None:
    t = Trace()
    step = t.ev(STEP, 0, 500)
    region = t.ev("Torch-Compiled Region: 3/0", 10, 200, step)
    t.ev("CompiledFunction", 20, 190, region, seq=4)
    node = t.ev(f"{BACKWARD_NODE}CompiledFunctionBackward", 250, 400, step, seq=4, fwd_thread=MAIN)
    t.ev("aten::mm", 260, 390, node)
    charges, info = attribute_compiled_step(step, t.events, [], module_index=INDEX)
    assert info.graphs == {
        "3/0 forward": ("forward", pytest.approx(170e-6), 0.0),
        "3/0 backward": ("backward", pytest.approx(150e-6), 0.0),
    }
    # The graphs' work has no provenance (unattributed); the region around the
    # forward's CompiledFunction (20 us) is the wrapper's.
    assert info.unplaced_s == pytest.approx(320e-6)
    assert charges.step["compiled_wrapper"] == pytest.approx(20e-6)
    assert charges.step["unattributed"] == pytest.approx(480e-6)


def test_module_called_twice_counts_two_calls_and_charges_both() -> None:
    g = GraphInfo(
        "0/0",
        "forward",
        (ext("extern_kernels.addmm", "aten::addmm", "addmm"),
         ext("extern_kernels.addmm", "aten::addmm", "addmm_1")),
        {"addmm": NodeInfo("fc", "9", 1.0, "aten::addmm"),
         "addmm_1": NodeInfo("fc", "9@1", 1.0, "aten::addmm")},
    )
    t = Trace()
    step = t.ev(STEP, 0, 300)
    region = t.ev("Torch-Compiled Region: 0/0", 0, 290, step)
    fn = t.ev("CompiledFunction", 5, 285, region, seq=1)
    call = t.ev(f"{CALL_GRAPH} None ##", 10, 280, fn)
    t.ev("aten::addmm", 20, 100, call)
    t.ev("aten::addmm", 120, 260, call)
    charges, _ = attribute_compiled_step(step, t.events, [g], module_index=INDEX)
    assert charges.calls[4] == 2
    assert charges.modules[(4, "forward")] == pytest.approx(220e-6)


def test_graph_break_nested_regions_find_their_own_graphs() -> None:
    first = GraphInfo("0/0", "forward", (gen("cpp_fused_relu_0", "relu"),),
                      {"relu": NodeInfo("relu", "r", 1.0, "aten::relu")})
    second = GraphInfo("1/0", "forward", (gen("cpp_fused_relu_0", "addmm"),),
                       {"addmm": NodeInfo("fc", "f", 1.0, "aten::addmm")})
    t = Trace()
    step = t.ev(STEP, 0, 400)
    r0 = t.ev("Torch-Compiled Region: 0/0", 0, 390, step)
    f0 = t.ev("CompiledFunction", 5, 100, r0, seq=1)
    c0 = t.ev(f"{CALL_GRAPH} None ##", 10, 90, f0)
    t.ev("graph_0_cpp_fused_relu_0", 20, 80, c0)
    t.ev("aten::print_glue", 110, 150, r0)  # eager code at the break
    r1 = t.ev("Torch-Compiled Region: 1/0", 160, 380, r0)
    f1 = t.ev("CompiledFunction", 170, 370, r1, seq=2)
    c1 = t.ev(f"{CALL_GRAPH} None ##", 180, 360, f1)
    t.ev("graph_1_cpp_fused_relu_0", 190, 350, c1)  # same kernel name, other graph
    charges, info = attribute_compiled_step(step, t.events, [first, second], module_index=INDEX)
    assert charges.modules[(3, "forward")] == pytest.approx(60e-6)
    assert charges.modules[(4, "forward")] == pytest.approx(160e-6)
    assert set(info.graphs) == {"0/0 forward", "1/0 forward"}
    assert charges.total_s() == pytest.approx(400e-6)


def test_cuda_device_kernels_of_the_call_range_are_matched_by_name() -> None:
    """Torch that launches Triton kernels without a range of their own: they are the
    graph call's own kernels."""
    g = GraphInfo("0/0", "forward",
                  (gen("triton_poi_fused_relu_0", "relu"),
                   ext("extern_kernels.mm", "aten::mm", "mm"),
                   gen("triton_red_fused_sum_1", "sum")),
                  {"relu": NodeInfo("relu", "r", 1.0, "aten::relu"),
                   "mm": NodeInfo("fc", "f", 1.0, "aten::mm"),
                   "sum": NodeInfo("bn", "b", 1.0, "aten::sum")})
    t = Trace()
    step = t.ev(STEP, 0, 1000)
    region = t.ev("Torch-Compiled Region: 0/0", 0, 100, step)
    fn = t.ev("CompiledFunction", 5, 95, region, seq=1)
    call = t.ev(f"{CALL_GRAPH} None ##", 10, 90, fn, device_us=70.0)
    t.ev("aten::mm", 20, 40, call, device_us=200.0)
    kernels = {call.id: [("triton_poi_fused_relu_0", 30.0), ("triton_red_fused_sum_1", 40.0)]}
    charges, info = attribute_compiled_step(
        step, t.events, [g], module_index=INDEX, device_time=True, step_wall_s=1000e-6,
        kernels=kernels,
    )
    assert charges.modules[(3, "forward")] == pytest.approx(30e-6)
    assert charges.modules[(2, "forward")] == pytest.approx(40e-6)
    assert charges.modules[(4, "forward")] == pytest.approx(200e-6)
    assert charges.total_s() == pytest.approx(1000e-6)
    assert info.placed_s == pytest.approx(270e-6)


def test_strip_graph_prefix() -> None:
    assert strip_graph_prefix("graph_12_cpp_fused_relu_0") == "cpp_fused_relu_0"
    assert strip_graph_prefix("aten::mm") == "aten::mm"
    assert strip_graph_prefix("triton_poi_fused_0") == "triton_poi_fused_0"


def test_module_path_from_dynamo_sources() -> None:
    assert module_path("L['self'].features.0") == "features.0"
    assert module_path("L['self']._modules['features']._modules['0']") == "features.0"
    assert module_path("L['s'].layers[3].conv") == "layers.3.conv"
    assert module_path("G['model'].fc") == "fc"


def test_call_sites_from_generated_wrapper_code() -> None:
    code = '''
cpp_fused_relu_0 = async_compile.cpp_pybinding(...)
# [Provenance debug handles] not_in_call:9
class Runner:
    def call(self, args):
        # [Provenance debug handles] cpp_fused_add_copy__0:1
        cpp_fused_add_copy__0(a, b)
        # Topologically Sorted Source Nodes: [conv2d], Original ATen: [aten.convolution]
        # [Provenance debug handles] extern_kernels.convolution:2
        buf2 = extern_kernels.convolution(buf1)
        # [Provenance debug handles] torch.ops.aten.convolution_backward.default:3
        buf8 = torch.ops.aten.convolution_backward.default(buf7)
'''
    mapping = {"cppCodeToPost": {"cpp_fused_add_copy__0:1": ["add", "copy_"],
                                 "extern_kernels.convolution:2": ["convolution"]}}
    sites = call_sites(code, mapping)
    assert [(s.kernel, s.event, s.generated, s.nodes) for s in sites] == [
        ("cpp_fused_add_copy__0", "cpp_fused_add_copy__0", True, ("add", "copy_")),
        ("extern_kernels.convolution", "aten::convolution", False, ("convolution",)),
        ("torch.ops.aten.convolution_backward.default", "aten::convolution_backward", False, None),
    ]


def test_accumulate_grad_after_compiled_backward_is_placed_by_gradient_shape() -> None:
    t = Trace()
    step = chain_step(t)
    acc = next(e for e in t.events if e.name == "torch::autograd::AccumulateGrad")
    copy = t.ev("aten::copy_", 862, 878, acc)
    charges, info = attribute_compiled_step(
        step, t.events, [FWD, BWD], module_index=INDEX,
        shapes={copy.id: (8, 3, 3, 3)}, param_modules={(8, 3, 3, 3): ["conv"], (8,): ["bn", "conv"]},
    )
    assert info.accumulate_placed_s == pytest.approx(20e-6)
    assert info.accumulate_s == 0
    assert charges.modules[(1, "backward")] == pytest.approx((180 + 20) * 1e-6)
    assert charges.total_s() == pytest.approx(1000e-6)
    # A shape two layers own is split equally between them.
    charges2, info2 = attribute_compiled_step(
        step, t.events, [FWD, BWD], module_index=INDEX,
        shapes={copy.id: (8,)}, param_modules={(8,): ["bn", "conv"]},
    )
    assert charges2.modules[(1, "backward")] == pytest.approx((180 + 10) * 1e-6)
    assert charges2.modules[(2, "backward")] == pytest.approx((60 + 10) * 1e-6)


def test_cuda_triton_kernels_under_an_unnamed_launch_range_are_matched_by_name() -> None:
    """Inductor names the range around a Triton launch after the kernel, or "triton
    kernel" when the kernel has no name in its metadata: then the kernels the range
    launched are matched (the per-kernel ranges of the usual case are in
    tests/test_cuda_path.py, read from profiler events)."""
    g = GraphInfo("0/0", "forward",
                  (gen("triton_poi_fused_relu_0", "relu"), gen("triton_red_fused_sum_1", "sum")),
                  {"relu": NodeInfo("relu", "r", 1.0, "aten::relu"),
                   "sum": NodeInfo("bn", "b", 1.0, "aten::sum")})
    t = Trace()
    step = t.ev(STEP, 0, 1000)
    region = t.ev("Torch-Compiled Region: 0/0", 0, 100, step)
    fn = t.ev("CompiledFunction", 5, 95, region, seq=1)
    call = t.ev(f"{CALL_GRAPH} None ##", 10, 90, fn)
    # Kernels reported out of call order, each under its own launch range.
    second = t.ev("triton kernel", 20, 25, call, device_us=40.0)
    first = t.ev("triton kernel", 30, 35, call, device_us=30.0)
    kernels = {second.id: [("triton_red_fused_sum_1", 40.0)],
               first.id: [("triton_poi_fused_relu_0", 30.0)]}
    charges, info = attribute_compiled_step(
        step, t.events, [g], module_index=INDEX, device_time=True, step_wall_s=1000e-6,
        kernels=kernels,
    )
    assert charges.modules[(3, "forward")] == pytest.approx(30e-6)
    assert charges.modules[(2, "forward")] == pytest.approx(40e-6)
    assert info.unplaced == {}
    assert charges.total_s() == pytest.approx(1000e-6)


class _SharedAct(nn.Module):
    """One ReLU registered under two names: ``act``, and ``body.1`` inside a Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.body = nn.Sequential(nn.Linear(4, 4), self.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_module_under_two_names_resolves_to_the_module_tables_name() -> None:
    model = _SharedAct()
    table_names = {e.name for e in ModuleTable(model)}
    names = ModuleNames(model)
    act = id(model.act)
    # Dynamo keys a stack entry by the module object's id; its source is the path it took.
    assert names.resolve(f"{act}", "L['self'].body[1]") == "act"
    assert names.resolve("not-an-id", "L['self'].body[1]") == "act"
    assert names.resolve("not-an-id", "L['self'].act") == "act"
    assert {"act", "body.0"} <= table_names and "body.1" not in table_names


def test_a_fallback_without_provenance_borrows_the_nodes_of_the_kernel_that_fed_it() -> None:
    """Max-pool's backward on the CPU: Inductor prepares a scatter's inputs in a fused
    kernel, then calls aten.scatter_reduce_ on them without a provenance handle."""
    code = '''
def call(self, args):
    # [Provenance debug handles] cpp_fused_max_pool2d_with_indices_backward_12:76
    cpp_fused_max_pool2d_with_indices_backward_12(buf143, buf138, getitem_3, buf144, buf140)
    del buf138
    aten.scatter_reduce_.two(buf140,1,buf142,buf144, reduce='sum', include_self=True)
    buf9 = empty_strided_cpu((4, 4), (4, 1), torch.float32)
    aten.index_put_(buf9, [buf7], buf8, True)
'''
    mapping = {"cppCodeToPost": {
        "cpp_fused_max_pool2d_with_indices_backward_12:76": ["add_115", "scatter_add", "full_1"]}}
    sites = call_sites(code, mapping)
    assert [(s.kernel, s.event, s.generated, s.nodes, s.borrowed) for s in sites] == [
        ("cpp_fused_max_pool2d_with_indices_backward_12",
         "cpp_fused_max_pool2d_with_indices_backward_12", True,
         ("add_115", "scatter_add", "full_1"), False),
        ("aten.scatter_reduce_.two", "aten::scatter_reduce_", False,
         ("add_115", "scatter_add", "full_1"), True),
        ("aten.index_put_", "aten::index_put_", False, None, False),  # fed by no tracked kernel
    ]
    graph = GraphInfo("0/0", "backward", sites, {
        "add_115": NodeInfo("relu", "r", 50.0, "aten::add"),
        "scatter_add": NodeInfo("bn", "p", 30.0, "aten::scatter_add"),
        "full_1": NodeInfo("bn", "p", 10.0, "aten::full"),
    })
    t = Trace()
    step = t.ev(STEP, 0, 1000)
    node = t.ev(f"{BACKWARD_NODE}CompiledFunctionBackward", 100, 900, step, seq=3, fwd_thread=MAIN)
    call = t.ev(f"{CALL_GRAPH} None ##", 110, 890, node)
    t.ev("graph_0_cpp_fused_max_pool2d_with_indices_backward_12", 120, 300, call)
    t.ev("aten::scatter_reduce_", 300, 700, call)
    charges, info = attribute_compiled_step(step, t.events, [graph], module_index=INDEX)
    # The scatter is the scatter_add node's work: all of it on that node's layer.
    assert charges.modules[(2, "backward")] == pytest.approx((400 + 180 * 40 / 90) * 1e-6)
    assert charges.modules[(3, "backward")] == pytest.approx(180 * 50 / 90 * 1e-6)
    assert info.unplaced == {}
    assert charges.total_s() == pytest.approx(1000e-6)
def test_a_modules_own_projections_go_to_their_rows_forward_and_backward() -> None:
    # An attention module that computes in_proj (its own weight) and out_proj (a child's
    # weight) itself: the matmul nodes are its, by module stack; the table's op_rows says
    # addmm's FLOPs were 3:1 between its part and out_proj in the eager forward.
    index = {"": 0, "att": 1, "att.out_proj": 2, "att.(in_proj)": 3}
    fwd = GraphInfo("0/0", "forward", (
        ext("extern_kernels.addmm", "aten::addmm", "addmm"),
        ext("extern_kernels.bmm", "aten::bmm", "bmm"),
        gen("cpp_fused__softmax_0", "softmax"),
        ext("extern_kernels.addmm", "aten::addmm", "addmm_1"),
    ), {
        "addmm": NodeInfo("att", "a", 30.0, "aten::addmm"),
        "bmm": NodeInfo("att", "a", 10.0, "aten::bmm"),
        "softmax": NodeInfo("att", "a", 5.0, "aten::_softmax"),
        "addmm_1": NodeInfo("att", "a", 10.0, "aten::addmm"),
    })
    bwd = GraphInfo("0/0", "backward", (ext("extern_kernels.mm", "aten::mm", "mm"),),
                    {"mm": NodeInfo("att", "a", 10.0, "aten::mm")})
    t = Trace()
    step = t.ev(STEP, 0, 1000)
    root = t.ev(f"{MODULE}0", 10, 400, step)
    region = t.ev("Torch-Compiled Region: 0/0", 20, 395, root)
    fn = t.ev("CompiledFunction", 30, 390, region, seq=7)
    call = t.ev(f"{CALL_GRAPH} None ##", 40, 380, fn)
    t.ev("aten::addmm", 50, 130, call)
    t.ev("aten::bmm", 130, 170, call)
    t.ev("graph_0_cpp_fused__softmax_0", 170, 200, call)
    t.ev("aten::addmm", 200, 240, call)
    bwd_range = t.ev(f"{PHASE}backward", 450, 900, step)
    node = t.ev(f"{BACKWARD_NODE}CompiledFunctionBackward", 460, 850, bwd_range, seq=7,
                fwd_thread=MAIN)
    bcall = t.ev(f"{CALL_GRAPH} None ##", 470, 840, node)
    t.ev("aten::mm", 480, 560, bcall)
    splits = {"att": {"addmm": {"att.(in_proj)": 0.75, "att.out_proj": 0.25}}}
    charges, _ = attribute_compiled_step(step, t.events, [fwd, bwd], module_index=index,
                                         splits=splits)
    m = charges.modules
    assert m[(1, "forward")] == pytest.approx(70e-6)  # bmm and softmax: the core
    assert m[(3, "forward")] == pytest.approx(0.75 * 120e-6)
    assert m[(2, "forward")] == pytest.approx(0.25 * 120e-6)
    assert m[(3, "backward")] == pytest.approx(0.75 * 80e-6)  # mm: addmm's family
    assert (1, "backward") not in m
    assert charges.total_s() == pytest.approx(charges.step_s)
