"""The CUDA path, tested where no GPU is: hand-made profiler events, fake scalers,
the one-session path run on the CPU, device-name matching, math settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from layertime.cost.devices import builtin_profiles, matches_device, profile_for_device
from layertime.cost.roofline import MathMode
from layertime.measure.attribute import attribute_step, split_steps
from layertime.measure.environment import conv_tf32, describe, matmul_tf32, matmul_tf32_set
from layertime.measure.compiled.attribute import CALL_GRAPH
from layertime.measure.events import MODULE, STEP, KernelSpan, busy_us, device_spans, from_profiler
from layertime.measure.runner import _traced_steps
from layertime.modules import ModuleTable
from layertime.workload import Workload, WorkloadSpec


@dataclass
class _Range:
    start: float
    end: float


@dataclass(eq=False)
class FakeEvent:
    """What ``torch.profiler``'s FunctionEvent offers from_profiler (identity equality)."""

    id: int
    name: str
    start: float
    end: float
    cpu_parent: FakeEvent | None = None
    thread: int = 1
    sequence_nr: int = -1
    fwd_thread: int = 0
    self_device_time_total: float = 0.0
    device_type: str = "DeviceType.CPU"
    is_async: bool = False
    activity_type: str | None = "cpu_op"
    device_resource_id: int = 7
    cpu_children: list[Any] = field(default_factory=list)
    #: Where the fake has them (newer torch): the device events' link to their op's
    #: id, whether an event is a user annotation, and the kernels torch's parser
    #: attached to an op (name, device, duration).
    linked_correlation_id: int | None = None
    is_user_annotation: bool = False
    kernels: list[Any] | None = None

    @property
    def time_range(self) -> _Range:
        return _Range(self.start, self.end)


def _cuda_like_events() -> list[FakeEvent]:
    """A step whose conv op launched a kernel through cudaLaunchKernel, where the
    runtime event's CUPTI id equals the step's own id (as happens on CUDA)."""
    step = FakeEvent(5, STEP, 0, 100, activity_type="user_annotation")
    mod = FakeEvent(6, f"{MODULE}1", 10, 60, step, activity_type="user_annotation")
    conv = FakeEvent(7, "aten::convolution", 12, 50, mod, self_device_time_total=30.0)
    # The runtime call nested in the op carries an id that collides with the step's.
    launch = FakeEvent(5, "cudaLaunchKernel", 20, 22, conv, activity_type="cuda_runtime")
    overhead = FakeEvent(7, "Activity Buffer Request", 23, 24, conv, activity_type="overhead")
    kernel = FakeEvent(99, "implicit_gemm", 30, 60, device_type="DeviceType.CUDA",
                       activity_type="kernel")
    return [step, mod, conv, launch, overhead, kernel]


def test_runtime_and_overhead_events_are_dropped_and_ids_are_unique() -> None:
    events = from_profiler(_cuda_like_events())
    assert [e.name for e in events] == [STEP, f"{MODULE}1", "aten::convolution"]
    assert len({e.id for e in events}) == len(events)
    by_name = {e.name: e for e in events}
    assert by_name[STEP].parent is None
    assert by_name[f"{MODULE}1"].parent == by_name[STEP].id
    assert by_name["aten::convolution"].parent == by_name[f"{MODULE}1"].id


def test_colliding_ids_no_longer_count_kernel_time_twice() -> None:
    raw = _cuda_like_events()
    events = from_profiler(raw)
    step, members = split_steps(events)[0]
    charges = attribute_step(step, members, device_time=True, step_wall_s=100e-6)
    assert charges.modules == {(1, "forward"): pytest.approx(30e-6)}
    assert charges.step["unattributed"] == pytest.approx(70e-6)
    assert charges.total_s() == pytest.approx(100e-6)


def test_runtime_events_are_recognised_by_name_on_older_torch() -> None:
    raw = _cuda_like_events()
    for e in raw:
        e.activity_type = None  # torch without activity types
    names = [e.name for e in from_profiler(raw)]
    assert "cudaLaunchKernel" not in names
    assert "Activity Buffer Request" not in names


def test_an_event_whose_id_is_its_ancestors_does_not_loop() -> None:
    step = FakeEvent(3, STEP, 0, 10)
    child = FakeEvent(3, "aten::add", 1, 2, step)  # same id as its parent
    events = from_profiler([step, child])
    groups = split_steps(events)
    assert len(groups) == 1 and len(groups[0][1]) == 2


def test_device_spans_and_busy_time_union() -> None:
    spans = device_spans(_cuda_like_events())
    assert spans == [KernelSpan(30, 60, 7)]
    overlapping = [KernelSpan(0, 10, 1), KernelSpan(5, 15, 2), KernelSpan(20, 30, 1),
                   KernelSpan(25, 26, 3), KernelSpan(90, 200, 1)]
    union, total = busy_us(overlapping, 0, 100)
    assert total == 10 + 10 + 10 + 1 + 10
    assert union == 15 + 10 + 10


def test_overlapping_kernels_are_scaled_to_the_busy_time() -> None:
    from layertime.measure.events import OpEvent

    step = OpEvent(1, STEP, 1, 0, 100)
    a = OpEvent(2, f"{MODULE}1", 1, 0, 40, parent=1)
    k1 = OpEvent(3, "aten::mm", 1, 1, 39, parent=2, device_us=40.0)
    b = OpEvent(4, f"{MODULE}2", 1, 40, 80, parent=1)
    k2 = OpEvent(5, "aten::mm", 1, 41, 79, parent=4, device_us=40.0)
    # 80 µs of kernels ran in 60 µs of busy time (two streams overlapped).
    charges = attribute_step(step, [step, a, k1, b, k2], device_time=True, step_wall_s=100e-6,
                             device_busy_s=60e-6)
    assert charges.modules[(1, "forward")] == pytest.approx(30e-6)
    assert charges.modules[(2, "forward")] == pytest.approx(30e-6)
    assert charges.overlap_s == pytest.approx(20e-6)
    assert charges.step["unattributed"] == pytest.approx(40e-6)
    assert charges.total_s() == pytest.approx(100e-6)


def test_no_overlap_leaves_rows_alone() -> None:
    from layertime.measure.events import OpEvent

    step = OpEvent(1, STEP, 1, 0, 100)
    a = OpEvent(2, f"{MODULE}1", 1, 0, 40, parent=1, device_us=25.0)
    charges = attribute_step(step, [step, a], device_time=True, step_wall_s=100e-6,
                             device_busy_s=25e-6)
    assert charges.modules[(1, "forward")] == pytest.approx(25e-6)
    assert charges.overlap_s == 0.0


class _FakeScaler:
    """Halves its scale on the steps listed (a skipped update), as GradScaler does."""

    def __init__(self, skips: set[int]) -> None:
        self.scale = 65536.0
        self.skips = skips
        self.calls = 0

    def get_scale(self) -> float:
        return self.scale

    def step(self) -> None:
        self.calls += 1
        if self.calls in self.skips:
            self.scale /= 2


def _work(model: nn.Module) -> Workload:
    cfg = WorkloadSpec.create("test", batch_size=2, input_shape=(4,), num_classes=3)
    return Workload(model, cfg, torch.device("cpu"), torch.Size([2, 3]))


def test_update_skipped_follows_the_scale() -> None:
    work = _work(nn.Linear(4, 3))
    assert work.update_skipped() is False  # no scaler: never skipped
    fake = _FakeScaler({1, 2})
    work.scaler = fake  # type: ignore[assignment]
    work._last_scale = fake.get_scale()
    seen = []
    for _ in range(4):
        fake.step()
        seen.append(work.update_skipped())
    assert seen == [True, True, False, False]


def test_traced_steps_in_one_session_give_one_charge_per_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    work = _work(model)
    table = ModuleTable(model)
    charges, losses, skipped = _traced_steps(work, table, 3)
    assert len(charges) == 3 and len(losses) == 3 and skipped == 0
    for c in charges:
        assert c.total_s() == pytest.approx(c.step_s)
        assert c.modules.get((1, "forward"), 0.0) > 0
        assert c.modules.get((3, "backward"), 0.0) > 0


@pytest.mark.parametrize(
    "reported, key",
    [
        ("NVIDIA H200", "h200"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("Tesla V100-SXM2-32GB", "v100"),
        ("Tesla T4", "t4"),
        ("NVIDIA GeForce GTX TITAN X", "titanx-maxwell"),
    ],
)
def test_torch_device_names_match_the_builtin_profiles(reported: str, key: str) -> None:
    prof = profile_for_device(reported)
    assert prof is not None and prof.key == key
    assert prof.name != reported  # the datasheet name never equals torch's
    others = [p for p in builtin_profiles().values() if p.key != key]
    assert not any(matches_device(p.key, p.name, reported) for p in others)


def test_unknown_devices_match_nothing_and_exact_names_match() -> None:
    assert profile_for_device("NVIDIA TITAN Xp") is None
    assert profile_for_device("NVIDIA GeForce RTX 4090") is None
    assert matches_device("local-x", "My Lab GPU", "my lab gpu")


def test_environment_records_the_math_settings() -> None:
    env = describe(torch.device("cpu"))
    assert env.cudnn_benchmark == bool(torch.backends.cudnn.benchmark)
    assert env.conv_tf32 == conv_tf32()
    assert env.matmul_tf32 == matmul_tf32()
    mode = MathMode.of_run(env)
    assert mode == MathMode(conv_tf32=env.conv_tf32, matmul_tf32=env.matmul_tf32)


def test_matmul_tf32_is_set_for_a_block_and_restored() -> None:
    before = matmul_tf32()
    with matmul_tf32_set(not before):
        assert matmul_tf32() is (not before)
    assert matmul_tf32() is before


def test_math_mode_of_an_old_run_is_torchs_default() -> None:
    env = describe(torch.device("cpu"))
    from dataclasses import replace

    old = replace(env, conv_tf32=None, matmul_tf32=None, cudnn_benchmark=None)
    assert MathMode.of_run(old) == MathMode()


def test_cuda_idle_is_taken_from_the_unprofiled_step() -> None:
    from layertime.measure.attribute import StepCharges
    from layertime.measure.device_time import idle_from_plain

    # A traced step of 40 ms wall: 25 ms of layer kernels, 1 ms of kernels in no
    # range, and 14 ms the GPU waited (the profiler slowed the launches).
    c = StepCharges(step_s=40e-3, modules={(1, "forward"): 25e-3},
                    step={"unattributed": 15e-3, "loss": 0.0}, unowned_s=1e-3)
    slow = StepCharges(step_s=40e-3, modules={(1, "forward"): 31e-3},
                       step={"unattributed": 9e-3}, unowned_s=0.0)
    idle_from_plain([c, slow], plain_s=30e-3)
    assert c.step["unattributed"] == pytest.approx(1e-3 + 4e-3)
    assert c.step_s == pytest.approx(30e-3) and c.total_s() == pytest.approx(c.step_s)
    # Kernels longer than the unprofiled step: no idle, rows add up to the kernels.
    assert slow.step["unattributed"] == 0.0
    assert slow.step_s == pytest.approx(31e-3) and slow.total_s() == pytest.approx(slow.step_s)


@dataclass
class _Kernel:
    name: str
    device: int
    duration: float


def _compiled_cuda_step() -> list[FakeEvent]:
    """One compiled forward on CUDA as torch.profiler records it: inside the graph call,
    Inductor wraps each Triton launch in a range named after the kernel (the launch is a
    driver call under it), and the device kernel, of that same name, is linked to that
    range; an extern kernel is an aten op with a cuBLAS kernel.  Our own ranges have GPU
    mirrors (user annotations of the same name), which are no work of their own."""
    ev: list[FakeEvent] = []

    def cpu(i: int, name: str, a: float, b: float, parent: FakeEvent | None,
            activity: str = "cpu_op", linked: int = 0) -> FakeEvent:
        e = FakeEvent(i, name, a, b, parent, activity_type=activity, linked_correlation_id=linked)
        ev.append(e)
        return e

    def gpu(name: str, a: float, b: float, op: FakeEvent, activity: str = "kernel") -> None:
        ev.append(FakeEvent(1000 + len(ev), name, a, b, device_type="DeviceType.CUDA",
                            activity_type=activity, linked_correlation_id=op.id,
                            is_user_annotation=activity == "gpu_user_annotation"))
        if op.kernels is None:
            op.kernels = []
        op.kernels.append(_Kernel(name, 0, b - a))  # as torch's parser attaches it

    step = cpu(1, STEP, 0, 1000, None, "user_annotation")
    root = cpu(2, f"{MODULE}0", 10, 300, step, "user_annotation")
    gpu(f"{MODULE}0", 100, 700, root, "gpu_user_annotation")  # the range's mirror
    region = cpu(3, "Torch-Compiled Region: 0/0", 20, 290, root)
    fn = cpu(4, "CompiledFunction", 30, 280, region)
    fn.sequence_nr = 1
    call = cpu(5, f"{CALL_GRAPH} None ##", 40, 270, fn, "user_annotation")
    relu = cpu(6, "triton_poi_fused_relu_0", 50, 80, call)
    cpu(77, "cuLaunchKernel", 60, 70, relu, "cuda_driver", linked=6)
    gpu("triton_poi_fused_relu_0", 100, 130, relu)
    mm = cpu(8, "aten::mm", 90, 150, call)
    cpu(78, "cudaLaunchKernel", 100, 110, mm, "cuda_runtime", linked=8)
    gpu("sm90_xmma_gemm_f32f32", 130, 330, mm)
    red = cpu(10, "triton_red_fused_sum_1", 160, 190, call)
    cpu(79, "cuLaunchKernel", 165, 175, red, "cuda_driver", linked=10)
    gpu("triton_red_fused_sum_1", 330, 370, red)
    return ev


def test_inductors_per_kernel_ranges_carry_their_triton_kernels_device_time() -> None:
    from layertime.measure.compiled.attribute import attribute_compiled_step
    from layertime.measure.compiled.graphs import CallSite, GraphInfo, NodeInfo
    from layertime.measure.events import launched_kernels

    raw = _compiled_cuda_step()
    launched = launched_kernels(raw)
    assert launched is not None
    events = from_profiler(raw)
    device = {e.name: e.device_us for e in events}
    # The Triton kernel has its range's name and is its work; the module range's
    # same-named GPU mirror is not.
    assert device["triton_poi_fused_relu_0"] == pytest.approx(30.0)
    assert device["triton_red_fused_sum_1"] == pytest.approx(40.0)
    assert device["aten::mm"] == pytest.approx(200.0)
    assert device[f"{MODULE}0"] == 0.0
    assert [KernelSpan(s.start_us, s.end_us, s.stream) for s in device_spans(raw)] == [
        KernelSpan(100, 130, 7), KernelSpan(130, 330, 7), KernelSpan(330, 370, 7)]

    graph = GraphInfo("0/0", "forward", (
        CallSite("triton_poi_fused_relu_0", "triton_poi_fused_relu_0", True, ("relu",)),
        CallSite("extern_kernels.mm", "aten::mm", False, ("mm",)),
        CallSite("triton_red_fused_sum_1", "triton_red_fused_sum_1", True, ("sum",)),
    ), {"relu": NodeInfo("relu", "r", 1.0, "aten::relu"), "mm": NodeInfo("fc", "f", 1.0, "aten::mm"),
        "sum": NodeInfo("bn", "b", 1.0, "aten::sum")})
    step, members = split_steps(events)[0]
    charges, info = attribute_compiled_step(
        step, members, [graph], module_index={"": 0, "bn": 2, "relu": 3, "fc": 4},
        device_time=True, step_wall_s=1000e-6,
    )
    assert charges.modules[(3, "forward")] == pytest.approx(30e-6)
    assert charges.modules[(4, "forward")] == pytest.approx(200e-6)
    assert charges.modules[(2, "forward")] == pytest.approx(40e-6)
    assert info.unplaced == {} and info.placed_s == pytest.approx(270e-6)
    assert charges.total_s() == pytest.approx(1000e-6)


def test_without_links_a_kernel_named_like_its_range_is_taken_for_its_mirror() -> None:
    """Older torch (no activity types or links): the events' own kernel lists, as before."""
    raw = _compiled_cuda_step()
    for e in raw:
        e.linked_correlation_id = None
    device = {e.name: e.device_us for e in from_profiler(raw)}
    assert device["aten::mm"] == pytest.approx(200.0) and device[f"{MODULE}0"] == 0.0
