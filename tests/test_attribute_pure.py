"""Attribution as a pure function: hand-made events on a fake clock, exact answers.

Times below are microseconds; charges come back in seconds, so every
expectation is ``us * 1e-6``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layertime.errors import LayertimeError
from layertime.measure.attribute import StepCharges, attribute_step, split_steps
from layertime.measure.events import (
    BACKWARD_NODE,
    DATALOADER_NEXT,
    MODULE,
    OPTIMIZER_STEP,
    OPTIMIZER_ZERO_GRAD,
    PHASE,
    STEP,
    OpEvent,
)

MAIN = 1  # the step's thread
OTHER = 2  # e.g. CUDA's autograd thread
ACC = "torch::autograd::AccumulateGrad"


class Trace:
    """Builds OpEvents with fresh ids; ``parent`` is an OpEvent or None."""

    def __init__(self) -> None:
        self.events: list[OpEvent] = []

    def ev(
        self,
        name: str,
        start: float,
        end: float,
        parent: OpEvent | None = None,
        *,
        seq: int = -1,
        thread: int = MAIN,
        fwd_thread: int = 0,
        device_us: float = 0.0,
    ) -> OpEvent:
        e = OpEvent(
            id=len(self.events) + 1,
            name=name,
            thread=thread,
            start_us=start,
            end_us=end,
            parent=parent.id if parent is not None else None,
            seq=seq,
            fwd_thread=fwd_thread,
            device_us=device_us,
        )
        self.events.append(e)
        return e

    def step(self, start: float, end: float, **kw) -> OpEvent:
        return self.ev(STEP, start, end, **kw)

    def module(self, i: int, start: float, end: float, parent: OpEvent, **kw) -> OpEvent:
        return self.ev(f"{MODULE}{i}", start, end, parent, **kw)

    def phase(self, name: str, start: float, end: float, parent: OpEvent, **kw) -> OpEvent:
        return self.ev(f"{PHASE}{name}", start, end, parent, **kw)

    def node(
        self, node: str, seq: int, start: float, end: float, parent: OpEvent, **kw
    ) -> OpEvent:
        """An engine range and the node's own range inside it, as torch records them.

        Returns the inner range, where the node's ops go."""
        kw.setdefault("fwd_thread", MAIN)
        outer = self.ev(f"{BACKWARD_NODE}{node}", start, end, parent, seq=seq, **kw)
        inner_kw = {k: v for k, v in kw.items() if k != "device_us"}
        return self.ev(node, start, end, outer, seq=seq, **inner_kw)

    def accumulate(self, start: float, end: float, parent: OpEvent, **kw) -> OpEvent:
        outer = self.ev(f"{BACKWARD_NODE}{ACC}", start, end, parent, **kw)
        self.ev(ACC, start, end, outer, thread=kw.get("thread", MAIN))
        return outer


def us(x: float) -> pytest.approx:
    return pytest.approx(x * 1e-6, abs=1e-12)


def check_sums(c: StepCharges) -> None:
    """The rows always add up to the step, and none is negative."""
    assert c.total_s() == pytest.approx(c.step_s, rel=1e-12, abs=1e-15)
    assert all(v >= 0 for v in c.modules.values()), c.modules
    assert all(c.step[r] >= -1e-15 for r in ("loss", "zero_grad", "data", "update")), c.step


def attribute(t: Trace, step: OpEvent, **kw) -> StepCharges:
    c = attribute_step(step, t.events, **kw)
    check_sums(c)
    return c


# -- forward: module ranges and self time ------------------------------------------


def test_module_self_time_excludes_children() -> None:
    t = Trace()
    s = t.step(0, 1000)
    root = t.module(0, 100, 900, s)
    conv = t.module(1, 150, 450, root)
    t.ev("aten::conv2d", 200, 400, conv, seq=0)
    t.ev("aten::add", 500, 600, root, seq=1)  # functional code in the container
    relu = t.module(2, 650, 850, root)
    t.ev("aten::relu", 700, 800, relu, seq=2)
    c = attribute(t, s)
    # The container keeps 800 - 300 - 200 = 300 us: its gaps plus the add.
    assert c.modules == {
        (0, "forward"): us(300),
        (1, "forward"): us(300),
        (2, "forward"): us(200),
    }
    assert c.calls == {0: 1, 1: 1, 2: 1}
    assert c.step_s == us(1000)
    assert c.step["unattributed"] == us(200)
    assert {k: v for k, v in c.step.items() if k != "unattributed"} == {
        "loss": 0.0,
        "zero_grad": 0.0,
        "data": 0.0,
        "update": 0.0,
    }


def test_nested_ops_inherit_their_module() -> None:
    t = Trace()
    s = t.step(0, 100)
    m = t.module(3, 10, 90, s)
    conv = t.ev("aten::conv2d", 20, 80, m, seq=0)
    conv_ = t.ev("aten::convolution", 30, 70, conv, seq=0)
    t.ev("aten::mkldnn_convolution", 40, 60, conv_)
    c = attribute(t, s)
    assert c.modules == {(3, "forward"): us(80)}


def test_module_called_twice_counts_two_calls_in_one_row() -> None:
    t = Trace()
    s = t.step(0, 1000)
    root = t.module(0, 0, 1000, s)
    t.module(1, 100, 200, root)
    t.module(1, 300, 450, root)
    c = attribute(t, s)
    assert c.calls == {0: 1, 1: 2}
    assert c.modules[(1, "forward")] == us(250)


def test_events_may_be_given_without_the_step_itself() -> None:
    t = Trace()
    s = t.step(0, 100)
    m = t.module(0, 10, 60, s)
    t.ev("aten::mm", 20, 50, m, seq=0)
    others = [e for e in t.events if e is not s]
    c = attribute_step(s, others)
    check_sums(c)
    assert c.modules == {(0, "forward"): us(50)}
    assert c.step["unattributed"] == us(50)


# -- backward: nodes go to the owner of the forward op with their sequence number -----


def _forward_and_backward(t: Trace) -> tuple[OpEvent, OpEvent]:
    """conv (module 1, seq 0), residual add in the container (module 0, seq 1),
    relu (module 2, seq 2), loss (seq 3); then the backward in reverse."""
    s = t.step(0, 2000)
    root = t.module(0, 100, 900, s)
    conv = t.module(1, 150, 450, root)
    t.ev("aten::conv2d", 200, 400, conv, seq=0)
    t.ev("aten::add", 500, 600, root, seq=1)
    relu = t.module(2, 650, 850, root)
    t.ev("aten::relu", 700, 800, relu, seq=2)
    loss = t.phase("loss", 900, 1000, s)
    t.ev("aten::cross_entropy_loss", 910, 990, loss, seq=3)
    bwd = t.phase("backward", 1000, 1900, s)
    t.ev("aten::ones_like", 1005, 1010, bwd)  # engine set-up, owned by nobody
    t.node("NllLossBackward0", 3, 1020, 1100, bwd)
    t.node("ReluBackward0", 2, 1100, 1200, bwd)
    t.node("AddBackward0", 1, 1200, 1250, bwd)
    n = t.node("ConvolutionBackward0", 0, 1300, 1700, bwd)
    t.ev("aten::convolution_backward", 1310, 1690, n)  # ops in a node inherit it
    t.accumulate(1700, 1720, bwd)  # conv weight
    t.accumulate(1720, 1730, bwd)  # conv bias
    return s, bwd


def test_backward_nodes_are_charged_to_the_forward_owner() -> None:
    t = Trace()
    s, _ = _forward_and_backward(t)
    c = attribute(t, s)
    assert c.modules[(1, "backward")] == us(400 + 20 + 10)  # node + its AccumulateGrads
    assert c.modules[(0, "backward")] == us(50)  # the residual add's node
    assert c.modules[(2, "backward")] == us(100)
    assert c.step["loss"] == us(100 + 80)  # the loss forward and its backward node
    # the backward range's own time (gaps, ones_like) is nobody's
    unowned_bwd = 900 - (80 + 100 + 50 + 400 + 20 + 10)
    assert c.step["unattributed"] == us(100 + unowned_bwd + 100)
    # forward charges unchanged by the backward
    assert c.modules[(0, "forward")] == us(300)
    assert c.calls == {0: 1, 1: 1, 2: 1}


def test_backward_node_looks_up_the_forward_thread_too() -> None:
    t = Trace()
    s = t.step(0, 1000)
    m = t.module(0, 0, 400, s)
    t.ev("aten::mm", 100, 300, m, seq=0)
    bwd = t.phase("backward", 500, 1000, s)
    # Same sequence number, but created on another thread: not module 0's.
    t.node("MmBackward0", 0, 600, 700, bwd, fwd_thread=OTHER)
    t.node("MmBackward0", 0, 700, 900, bwd, fwd_thread=MAIN)
    c = attribute(t, s)
    assert c.modules[(0, "backward")] == us(200)
    assert c.step["unattributed"] == us(100 + 300)


def test_unknown_sequence_number_is_unattributed() -> None:
    t = Trace()
    s = t.step(0, 100)
    bwd = t.phase("backward", 0, 100, s)
    t.node("MulBackward0", 42, 10, 60, bwd)
    t.accumulate(60, 70, bwd)
    c = attribute(t, s)
    assert c.modules == {}
    assert c.step["unattributed"] == us(100)


def test_accumulate_grad_goes_to_the_preceding_nodes_owner() -> None:
    t = Trace()
    s = t.step(0, 1000)
    root = t.module(0, 0, 300, s)
    a = t.module(1, 10, 100, root)
    t.ev("aten::linear", 20, 90, a, seq=0)
    b = t.module(2, 110, 200, root)
    t.ev("aten::linear", 120, 190, b, seq=1)
    bwd = t.phase("backward", 300, 1000, s)
    t.accumulate(310, 320, bwd)  # before any node: nobody's
    t.node("AddmmBackward0", 1, 400, 500, bwd)
    t.accumulate(500, 530, bwd)
    t.accumulate(530, 540, bwd)
    t.node("AddmmBackward0", 0, 600, 650, bwd)
    t.accumulate(650, 657, bwd)
    c = attribute(t, s)
    assert c.modules[(2, "backward")] == us(100 + 30 + 10)
    assert c.modules[(1, "backward")] == us(50 + 7)
    assert c.step["unattributed"] == us(700 - 140 - 57)


def test_last_op_recording_a_sequence_number_is_its_creator() -> None:
    """An op records the counter's next value even when it creates no node
    (a no-grad preprocessing module, a buffer update): the node belongs to the
    last op that recorded its number, not the first."""
    t = Trace()
    s = t.step(0, 1000)
    root = t.module(0, 0, 500, s)
    pre = t.module(1, 10, 100, root)  # (x - mean) / std on an input without grad
    t.ev("aten::sub", 20, 40, pre, seq=0)
    t.ev("aten::div", 50, 70, pre, seq=0)
    conv = t.module(2, 110, 300, root)  # creates node 0
    t.ev("aten::conv2d", 120, 290, conv, seq=0)
    t.ev("aten::convolution", 130, 280, t.events[-1], seq=0)
    counter = t.module(3, 310, 400, root)  # a buffer update after the last node
    t.ev("aten::add_", 320, 330, counter, seq=1)
    loss = t.phase("loss", 500, 600, s)
    t.ev("aten::log_softmax", 510, 590, loss, seq=1)  # creates node 1
    bwd = t.phase("backward", 600, 1000, s)
    t.node("LogSoftmaxBackward0", 1, 610, 700, bwd)
    t.node("ConvolutionBackward0", 0, 700, 900, bwd)
    t.accumulate(900, 910, bwd)
    c = attribute(t, s)
    assert c.modules[(2, "backward")] == us(210)
    assert (1, "backward") not in c.modules
    assert (3, "backward") not in c.modules
    assert c.step["loss"] == us(100 + 90)


def test_recomputation_in_backward_is_charged_to_the_modules_backward() -> None:
    """Activation checkpointing: module ranges nested in a backward node."""
    t = Trace()
    s = t.step(0, 2000)
    root = t.module(0, 0, 500, s)
    blk = t.module(1, 10, 400, root)
    conv = t.module(2, 20, 200, blk)
    t.ev("aten::conv2d", 30, 190, conv, seq=0)
    t.ev("aten::relu", 250, 350, blk, seq=1)
    bwd = t.phase("backward", 600, 2000, s)
    relu_node = t.node("ReluBackward0", 1, 700, 1300, bwd)
    re_blk = t.module(1, 710, 1200, relu_node)  # the recomputed forward
    re_conv = t.module(2, 720, 1000, re_blk)
    t.ev("aten::conv2d", 730, 990, re_conv, seq=7)
    t.ev("aten::relu", 1050, 1150, re_blk, seq=8)
    t.ev("aten::threshold_backward", 1210, 1290, relu_node)
    t.node("ConvolutionBackward0", 0, 1300, 1600, bwd)
    c = attribute(t, s)
    assert c.calls == {0: 1, 1: 1, 2: 1}  # the recomputation is not a call
    assert c.modules[(2, "forward")] == us(180)
    assert c.modules[(2, "backward")] == us(280 + 300)
    # blk: the relu node's own time (600 - 490) plus its recomputed self time (490 - 280)
    assert c.modules[(1, "backward")] == us(110 + 210)
    assert c.modules[(1, "forward")] == us(390 - 180)


# -- optimizer and phase ranges -----------------------------------------------------


def test_optimizer_ranges_and_phase_ranges() -> None:
    t = Trace()
    s = t.step(0, 1000)
    zg = t.phase("zero_grad", 0, 100, s)
    t.ev(f"{OPTIMIZER_ZERO_GRAD}SGD.zero_grad", 10, 90, zg)
    data = t.phase("data", 100, 200, s)
    t.ev("aten::copy_", 110, 190, data)
    m = t.module(0, 200, 400, s)
    t.ev("aten::mm", 210, 390, m, seq=0)
    loss = t.phase("loss", 400, 500, s)
    t.ev("aten::mse_loss", 410, 490, loss, seq=1)
    bwd = t.phase("backward", 500, 800, s)
    t.node("MseLossBackward0", 1, 510, 550, bwd)
    t.node("MmBackward0", 0, 550, 700, bwd)
    t.accumulate(700, 720, bwd)
    upd = t.phase("update", 800, 1000, s)
    opt = t.ev(f"{OPTIMIZER_STEP}SGD.step", 810, 990, upd)
    t.ev("aten::add_", 820, 900, opt)
    c = attribute(t, s)
    assert c.step["zero_grad"] == us(100)
    assert c.step["data"] == us(100)
    assert c.step["loss"] == us(100 + 40)
    assert c.step["update"] == us(200)
    assert c.modules == {(0, "forward"): us(200), (0, "backward"): us(170)}
    assert c.step["unattributed"] == us(300 - 40 - 170)


def test_optimizer_ranges_without_phase_ranges() -> None:
    """A user's loop has torch's optimizer ranges but none of ours."""
    t = Trace()
    s = t.step(0, 1000)
    t.ev(f"{OPTIMIZER_ZERO_GRAD}Adam.zero_grad", 0, 50, s)
    opt = t.ev(f"{OPTIMIZER_STEP}Adam.step", 800, 1000, s)
    t.ev("aten::_fused_adam_", 810, 990, opt)
    c = attribute(t, s)
    assert c.step["zero_grad"] == us(50)
    assert c.step["update"] == us(200)
    assert c.step["unattributed"] == us(750)


def test_unknown_phase_range_is_an_error() -> None:
    t = Trace()
    s = t.step(0, 100)
    t.phase("bogus", 10, 20, s)
    with pytest.raises(LayertimeError, match="bogus"):
        attribute_step(s, t.events)


# -- loop mode: data before the model's forward, loss between forward and backward ----


def _loop_step(t: Trace) -> OpEvent:
    s = t.step(0, 1000)
    t.ev("aten::copy_", 50, 100, s)  # x.to(device): data
    root = t.module(0, 200, 500, s)
    t.ev("aten::mm", 250, 450, root, seq=0)
    t.ev("aten::cross_entropy_loss", 550, 650, s, seq=1)  # the loss, no range of ours
    t.node("LogSoftmaxBackward0", 1, 700, 740, s)  # backward() straight in the step
    t.node("MmBackward0", 0, 740, 800, s)
    t.accumulate(800, 810, s)
    opt = t.ev(f"{OPTIMIZER_STEP}SGD.step", 850, 950, s)
    t.ev("aten::add_", 860, 940, opt)
    return s


def test_loop_mode_segments_the_step() -> None:
    t = Trace()
    s = _loop_step(t)
    c = attribute(t, s, loop=True)
    # data: gap 0-50, the copy 50-100, gap 100-200
    assert c.step["data"] == us(200)
    # loss: gap 500-550, the loss op, gap 650-700, and the loss's backward node
    assert c.step["loss"] == us(50 + 100 + 50 + 40)
    assert c.modules == {(0, "forward"): us(300), (0, "backward"): us(60 + 10)}
    assert c.step["update"] == us(100)
    # after the backward started, the step's gaps are nobody's: 810-850, 950-1000
    assert c.step["unattributed"] == us(40 + 50)
    assert c.calls == {0: 1}


def test_without_loop_mode_the_same_step_has_no_data_or_loss() -> None:
    t = Trace()
    s = _loop_step(t)
    c = attribute(t, s, loop=False)
    assert c.step["data"] == 0.0
    # the loss op is in no range, so it and its backward node are nobody's
    assert c.step["loss"] == 0.0
    assert c.modules == {(0, "forward"): us(300), (0, "backward"): us(70)}
    assert c.step["unattributed"] == us(1000 - 300 - 70 - 100)


def test_loop_mode_uses_the_root_module_given() -> None:
    t = Trace()
    s = t.step(0, 1000)
    t.module(5, 100, 200, s)  # some other module called before the model
    t.module(0, 300, 600, s)
    t.ev("aten::sum", 700, 800, s, seq=3)
    c = attribute(t, s, loop=True, root_module=0)
    assert c.step["data"] == us(100 + 100)  # gaps 0-100, 200-300
    assert c.modules[(5, "forward")] == us(100)
    assert c.step["loss"] == us(400)  # 600-1000: no backward at all
    c5 = attribute(t, s, loop=True, root_module=5)
    assert c5.step["data"] == us(100)
    assert c5.step["loss"] == us(100 + 400)


def test_loop_mode_with_backward_phase_range() -> None:
    t = Trace()
    s = t.step(0, 1000)
    t.module(0, 100, 300, s)
    t.ev("aten::mse_loss", 350, 400, s, seq=0)
    bwd = t.phase("backward", 500, 700, s)
    t.node("MseLossBackward0", 0, 510, 530, bwd)
    c = attribute(t, s, loop=True)
    assert c.step["data"] == us(100)
    assert c.step["loss"] == us(50 + 50 + 100 + 20)  # gap, op, gap to the backward, node
    assert c.step["unattributed"] == us(180 + 300)


def test_loop_mode_with_two_micro_batches_segments_each_pass() -> None:
    """Gradient accumulation: data, forward, loss, backward twice, then the update."""
    t = Trace()
    s = t.step(0, 2000)
    t.module(0, 100, 300, s)
    t.ev("aten::nll_loss", 300, 350, s, seq=0)
    t.node("NllLossBackward0", 0, 400, 450, s)
    t.node("NllLossBackward0", 0, 460, 500, s)  # a gap inside the backward pass: 450-460
    t.ev("aten::copy_", 600, 700, s)  # between the passes: the next batch
    t.module(0, 800, 1000, s)
    t.ev("aten::nll_loss", 1000, 1050, s, seq=1)
    t.node("NllLossBackward0", 1, 1100, 1150, s)
    t.ev("aten::linalg_vector_norm", 1200, 1300, s)  # after the last backward
    opt = t.ev(f"{OPTIMIZER_STEP}SGD.step", 1400, 1500, s)
    t.ev("aten::add_", 1410, 1490, opt)
    c = attribute(t, s, loop=True, after_backward="clip")
    assert c.modules[(0, "forward")] == us(400)
    assert c.calls == {0: 2}
    # data: 0-100 before the first pass, 500-800 between the passes
    assert c.step["data"] == us(100 + 300)
    # loss: 300-400 and 1000-1100 (ops and gaps), and the loss nodes
    assert c.step["loss"] == us(100 + 100 + 50 + 40 + 50)
    assert c.step["unattributed"] == us(10)  # the engine's gap inside one backward pass
    # after the last backward (1150-1400 but the update, and 1500-2000): clip
    assert c.step["clip"] == us(250 + 500)
    assert c.step["update"] == us(100)


def test_loop_mode_forward_is_the_outermost_modules_when_the_root_never_runs() -> None:
    """A Lightning training_step calls a child (self.net), never the root module."""
    t = Trace()
    s = t.step(0, 1000)
    outer = t.module(1, 200, 500, s)
    t.module(2, 250, 400, outer)
    t.ev("aten::sum", 550, 600, s, seq=0)
    c = attribute(t, s, loop=True, root_module=0)
    assert c.step["data"] == us(200)
    assert c.step["loss"] == us(500)  # 500-1000: after the forward, no backward


def test_dataloader_range_is_data_wherever_it_is() -> None:
    t = Trace()
    s = t.step(0, 1000)
    log = t.phase("logging", 0, 300, s)
    fetch = t.ev(f"{DATALOADER_NEXT}_SingleProcessDataLoaderIter.__next__", 50, 250, log)
    t.ev("aten::stack", 100, 200, fetch)
    t.module(0, 400, 600, s)
    c = attribute(t, s, loop=True)
    assert c.step["data"] == us(200 + 100)  # the fetch with its collation, 300-400 in no range
    assert c.step["logging"] == us(100)


def test_framework_phase_ranges_become_their_rows() -> None:
    t = Trace()
    s = t.step(0, 1000)
    upd = t.phase("update", 0, 600, s)
    loss = t.phase("loss", 0, 300, upd)
    t.module(0, 50, 200, loss)
    t.ev("aten::cross_entropy", 200, 280, loss, seq=0)
    bwd = t.phase("backward", 300, 400, upd)
    t.node("LogSoftmaxBackward0", 0, 310, 390, bwd)
    t.phase("clip", 400, 450, upd)
    t.ev(f"{OPTIMIZER_STEP}SGD.step", 450, 580, upd)
    t.phase("scheduler", 600, 650, s)
    t.phase("logging", 650, 1000, s)
    c = attribute(t, s, loop=True)
    # the range's own gaps (0-50, 280-300), the loss op, and its backward node
    assert c.step["loss"] == us(50 + 20 + 80 + 80)
    assert c.step["clip"] == us(50)
    assert c.step["update"] == us(130 + 20)  # the optimizer step and the update range's gaps
    assert c.step["scheduler"] == us(50)
    assert c.step["logging"] == us(350)
    assert c.step["unattributed"] == us(20)  # the backward range's own time


def test_after_backward_must_be_a_step_row() -> None:
    t = Trace()
    s = t.step(0, 10)
    with pytest.raises(LayertimeError, match="unknown step row"):
        attribute_step(s, t.events, loop=True, after_backward="optimizer")


# -- device time ------------------------------------------------------------------


def test_device_time_uses_kernel_time_and_the_rest_is_unattributed() -> None:
    t = Trace()
    s = t.step(0, 1000)
    m = t.module(0, 0, 300, s)
    conv = t.module(1, 10, 200, m)
    t.ev("aten::conv2d", 20, 190, conv, seq=0)
    t.ev("aten::cudnn_convolution", 30, 180, t.events[-1], device_us=120.0)
    t.ev("aten::add", 210, 290, m, seq=1, device_us=15.0)
    loss = t.phase("loss", 300, 400, s)
    t.ev("aten::nll_loss", 310, 390, loss, seq=2, device_us=5.0)
    bwd = t.phase("backward", 400, 450, s)
    t.ev("aten::ones_like", 410, 420, bwd, device_us=1.0)
    # the backward runs on the autograd thread: a root of its own, by start time
    eng = t.ev("autograd::engine::evaluate_function: NllLossBackward0", 420, 440, None,
               thread=OTHER, seq=2, fwd_thread=MAIN, device_us=3.0)
    t.ev("NllLossBackward0", 421, 439, eng, thread=OTHER, seq=2, fwd_thread=MAIN)
    n = t.node("AddBackward0", 1, 450, 460, None, thread=OTHER)
    t.ev("aten::copy_", 451, 459, n, thread=OTHER, device_us=4.0)
    n = t.node("ConvolutionBackward0", 0, 460, 600, None, thread=OTHER)
    t.ev("aten::convolution_backward", 461, 599, n, thread=OTHER, device_us=250.0)
    t.accumulate(600, 610, None, thread=OTHER, device_us=2.0)
    upd = t.phase("update", 700, 900, s)
    t.ev(f"{OPTIMIZER_STEP}SGD.step", 710, 890, upd, device_us=30.0)
    c = attribute(t, s, device_time=True, step_wall_s=2000e-6)
    assert c.step_s == pytest.approx(2000e-6)
    assert c.modules == {
        (1, "forward"): us(120),
        (0, "forward"): us(15),
        (0, "backward"): us(4),
        (1, "backward"): us(252),
    }
    assert c.step["loss"] == us(5 + 3)
    assert c.step["update"] == us(30)
    kernels = 120 + 15 + 5 + 1 + 3 + 4 + 250 + 2 + 30
    assert c.step["unattributed"] == us(2000 - kernels + 1)  # ones_like is nobody's too


def test_device_time_needs_the_wall_time() -> None:
    t = Trace()
    s = t.step(0, 100)
    with pytest.raises(ValueError):
        attribute_step(s, t.events, device_time=True)


def test_cpu_time_ignores_other_threads() -> None:
    """On the CPU, work on another thread overlaps the step's own wall time."""
    t = Trace()
    s = t.step(0, 1000)
    m = t.module(0, 0, 400, s)
    t.ev("aten::mm", 10, 390, m, seq=0)
    t.node("MmBackward0", 0, 500, 900, None, thread=OTHER)
    c = attribute(t, s)
    assert c.modules == {(0, "forward"): us(400)}
    assert c.step["unattributed"] == us(600)


# -- split_steps ------------------------------------------------------------------


def test_split_steps_groups_by_nesting_and_other_threads_by_time() -> None:
    t = Trace()
    before = t.ev("aten::randn", 0, 10, None)  # outside any step: dropped
    s2 = t.step(1000, 2000)  # created first, starts later: steps come sorted
    m2 = t.module(0, 1100, 1200, s2)
    mm2 = t.ev("aten::mm", 1110, 1190, m2, seq=0)
    s1 = t.step(100, 900)
    m1 = t.module(0, 200, 300, s1)
    mm1 = t.ev("aten::mm", 210, 290, m1, seq=0)
    other1 = t.node("MmBackward0", 0, 400, 500, None, thread=OTHER)
    other2 = t.node("MmBackward0", 0, 1500, 1600, None, thread=OTHER)
    late = t.node("MmBackward0", 0, 2500, 2600, None, thread=OTHER)  # after every step
    between = t.ev("aten::zeros", 950, 960, None)
    groups = split_steps(t.events)
    assert [g[0] for g in groups] == [s1, s2]
    ids1 = {e.id for e in groups[0][1]}
    ids2 = {e.id for e in groups[1][1]}
    assert {s1.id, m1.id, mm1.id, other1.parent, other1.id} == ids1
    assert {s2.id, m2.id, mm2.id, other2.parent, other2.id} == ids2
    for dropped in (before.id, late.parent, late.id, between.id):
        assert dropped not in ids1 | ids2


def test_split_steps_then_attribute_each_step() -> None:
    t = Trace()
    for k in range(3):
        base = k * 1000
        s = t.step(base, base + 500)
        m = t.module(0, base + 100, base + 200 + 10 * k, s)
        t.ev("aten::mm", base + 110, base + 190, m, seq=k)
    groups = split_steps(t.events)
    assert len(groups) == 3
    for k, (s, members) in enumerate(groups):
        c = attribute_step(s, members)
        check_sums(c)
        assert c.modules == {(0, "forward"): us(100 + 10 * k)}
        assert c.calls == {0: 1}


def test_split_steps_without_a_step_range() -> None:
    t = Trace()
    t.ev("aten::mm", 0, 10, None)
    assert split_steps(t.events) == []


# -- the rows always add up: random well-nested traces ------------------------------

NAMES = (
    [f"{MODULE}{i}" for i in range(4)]
    + [f"{PHASE}{p}" for p in ("loss", "zero_grad", "data", "update", "backward", "clip",
                                 "scheduler", "logging")]
    + [f"{DATALOADER_NEXT}_SingleProcessDataLoaderIter.__next__"]
    + [f"{BACKWARD_NODE}AddBackward0", f"{BACKWARD_NODE}{ACC}"]
    + [f"{OPTIMIZER_STEP}SGD.step", f"{OPTIMIZER_ZERO_GRAD}SGD.zero_grad"]
    + ["aten::mm", "aten::add", "aten::relu"]
)


@st.composite
def traces(draw: st.DrawFn) -> tuple[Trace, OpEvent]:
    t = Trace()
    end = draw(st.integers(1, 10_000))
    s = t.step(0, end)

    def fill(parent: OpEvent, lo: int, hi: int, depth: int) -> None:
        cursor = lo
        for _ in range(draw(st.integers(0, 3 if depth < 3 else 0))):
            if cursor >= hi:
                return
            a = draw(st.integers(cursor, hi))
            b = draw(st.integers(a, hi))
            name = draw(st.sampled_from(NAMES))
            seq = draw(st.integers(-1, 5))
            e = t.ev(name, a, b, parent, seq=seq, fwd_thread=MAIN)
            fill(e, a, b, depth + 1)
            cursor = b

    fill(s, 0, end, 0)
    return t, s


@settings(max_examples=150, deadline=None)
@given(traces(), st.booleans())
def test_random_traces_add_up_to_the_step(trace: tuple[Trace, OpEvent], loop: bool) -> None:
    t, s = trace
    c = attribute_step(s, t.events, loop=loop)
    assert c.step_s == pytest.approx(s.duration_us * 1e-6)
    check_sums(c)
    assert c.step["unattributed"] >= -1e-12
    # forward calls are the module ranges outside any backward
    assert sum(c.calls.values()) <= sum(1 for e in t.events if e.name.startswith(MODULE))


# -- ops computed with another row's parameters ---------------------------------------


def test_own_ops_with_another_rows_parameters_go_to_that_row() -> None:
    from layertime.measure.own_ops import split_own_ops

    # Module 1 (attention) runs linear(in_proj) -> softmax -> linear(out_proj.weight);
    # row 2 is its child out_proj, row 3 its part (in_proj).
    t = Trace()
    s = t.step(0, 2000)
    att = t.module(1, 100, 900, s)
    lin = t.ev("aten::linear", 100, 300, att, seq=10)
    t.ev("aten::addmm", 120, 280, lin, seq=10)
    t.ev("aten::_softmax", 300, 500, att, seq=11)
    lin2 = t.ev("aten::linear", 500, 800, att, seq=12)
    t.ev("aten::addmm", 520, 780, lin2, seq=12)
    bwd = t.phase("backward", 1000, 1900, s)
    t.node("AddmmBackward0", 12, 1000, 1200, bwd)
    t.accumulate(1200, 1300, bwd)
    t.node("SoftmaxBackward0", 11, 1300, 1500, bwd)
    t.node("AddmmBackward0", 10, 1500, 1800, bwd)
    events = split_own_ops(t.events, {1: (("addmm", 3), ("addmm", 2))})
    c = attribute_step(s, events)
    check_sums(c)
    assert c.modules[(3, "forward")] == us(200) and c.modules[(2, "forward")] == us(300)
    assert c.modules[(1, "forward")] == us(800 - 500)  # the softmax and its own gaps
    assert c.modules[(2, "backward")] == us(200 + 100)  # its node and AccumulateGrad
    assert c.modules[(3, "backward")] == us(300)
    assert c.modules[(1, "backward")] == us(200)
    assert c.calls == {1: 1, 2: 1, 3: 1}
    # Nothing to split: the events come back as they were.
    assert split_own_ops(t.events, {}) == t.events
