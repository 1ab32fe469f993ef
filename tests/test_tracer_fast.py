"""The tracer's fast paths change its cost, never its result: Kineto's events read
directly equal torch's FunctionEvent tree, and the lightweight ranges give the
same ranges and the same attribution as the record_function ops."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import layertime.measure.tracer as tracer
from layertime.measure.attribute import StepCharges, attribute_step, split_steps
from layertime.measure.events import MODULE, from_kineto, from_profiler
from layertime.measure.runner import trace_step
from layertime.measure.tracer import TraceSession
from layertime.modules import ModuleTable, training_mode
from layertime.workload import Workload, WorkloadSpec, check_input

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyTransformer(nn.Module):
    """Attention, an MLP, norms and a shared activation called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 32)
        self.block = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True,
                                                dropout=0.0)
        self.act = nn.ReLU()
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.embed(x.flatten(2).transpose(1, 2)))
        return self.head(self.act(self.block(h)).mean(1))


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, 10),
    )


MODELS = {"cnn": (small_cnn, (3, 8, 8)), "transformer": (TinyTransformer, (3, 4, 4))}


@pytest.fixture(params=sorted(MODELS))
def work(request: pytest.FixtureRequest) -> Iterator[tuple[Workload, ModuleTable]]:
    build, shape = MODELS[request.param]
    torch.manual_seed(0)
    model = build()
    spec = WorkloadSpec.create(model, batch_size=4, input_shape=shape, num_classes=10,
                               device="cpu")
    out = check_input(model, spec, torch.device("cpu"), request.param)
    with training_mode(model):
        yield Workload(model, spec, torch.device("cpu"), out), ModuleTable(model)


def traced(work: Workload, table: ModuleTable, *, fast: bool) -> TraceSession:
    session = TraceSession(table, torch.device("cpu"), fast=fast)
    trace_step(work, session)
    return session


def charges(session: TraceSession) -> StepCharges:
    [(step, members)] = split_steps(session.events)
    return attribute_step(step, members, device_time=False)


def test_events_read_from_kineto_equal_torchs_function_event_tree(work) -> None:  # type: ignore[no-untyped-def]
    for fast in (True, False):
        session = traced(*work, fast=fast)
        prof = session.profiler
        direct = from_kineto(prof.profiler.kineto_results)
        via_tree = from_profiler(prof.events())
        assert len(direct) > 50
        assert direct == via_tree  # every field: names, threads, times, parents, seq
        assert session.events == direct


def test_lightweight_ranges_give_the_same_ranges_and_attribution(work) -> None:  # type: ignore[no-untyped-def]
    sessions = {fast: traced(*work, fast=fast) for fast in (True, False)}
    ranges = {fast: Counter(e.name for e in s.events if e.name.startswith(MODULE))
              for fast, s in sessions.items()}
    assert ranges[True] == ranges[False] and sum(ranges[True].values()) >= 8
    # The shared ReLU of the transformer is called twice per forward: two ranges.
    rows = {fast: charges(s) for fast, s in sessions.items()}
    # The same (layer, phase) cells are charged, each layer called as often; rows add up.
    assert rows[True].modules.keys() == rows[False].modules.keys()
    assert rows[True].calls == rows[False].calls
    for c in rows.values():
        assert c.total_s() == pytest.approx(c.step_s, rel=1e-9)


def test_without_the_lightweight_range_the_ops_are_used(work, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert tracer._RangeHooks(work[1])._fast  # this torch has the lightweight range
    monkeypatch.setattr(tracer, "_FAST_RANGE", None)
    assert not tracer._RangeHooks(work[1])._fast
    session = traced(*work, fast=True)
    assert sum(e.name.startswith(MODULE) for e in session.events) >= 8
    assert charges(session).modules


def test_hooks_are_gone_after_the_step_and_after_an_error(work) -> None:  # type: ignore[no-untyped-def]
    w, table = work
    before = [(len(e.module._forward_pre_hooks), len(e.module._forward_hooks)) for e in table]
    traced(w, table, fast=True)
    session = TraceSession(table, torch.device("cpu"))
    session.start()
    try:
        with pytest.raises(RuntimeError):
            session.enter_step()
            raise RuntimeError("model failed")
    finally:
        session.abort()
    assert [(len(e.module._forward_pre_hooks), len(e.module._forward_hooks))
            for e in table] == before


class Recursive(nn.Module):
    """A module that calls itself: its range object is open when it is entered again."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, depth: int = 2) -> torch.Tensor:
        x = self.lin(x)
        return self(x, depth - 1) if depth > 0 else x


def test_a_module_called_inside_itself_gets_a_range_per_call() -> None:
    model = Recursive()
    table = ModuleTable(model)
    session = TraceSession(table, torch.device("cpu"))
    session.start()
    session.enter_step()
    model(torch.ones(2, 4)).sum().backward()
    session.exit_step()
    events = session.stop()
    ranges = sorted((e for e in events if e.name.startswith(MODULE)), key=lambda e: e.start_us)
    outer = [e for e in ranges if e.name == f"{MODULE}0"]
    assert len(outer) == 3  # depth 2, 1, 0: nested, each closed after its own body
    assert outer[1].parent == outer[0].id and outer[2].parent == outer[1].id
    assert outer[0].end_us >= outer[1].end_us >= outer[2].end_us


def test_results_without_the_methods_are_read_through_torchs_tree(work) -> None:  # type: ignore[no-untyped-def]
    from layertime.measure.events import kineto_readable

    session = traced(*work, fast=True)
    results = session.profiler.profiler.kineto_results
    assert kineto_readable(results, tracer._KINETO_EVENT)
    assert type(results.events()[0]) is tracer._KINETO_EVENT

    class Bare:  # an older torch's event, without sequence numbers
        def name(self) -> str:
            return "aten::mm"

    class Old:
        def trace_start_ns(self) -> int:
            return 0

        def events(self) -> list[Bare]:
            return [Bare()]

    assert not kineto_readable(Old(), Bare) and not kineto_readable(None, tracer._KINETO_EVENT)
    assert not kineto_readable(results, None)
