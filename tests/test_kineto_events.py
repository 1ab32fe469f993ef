"""``from_kineto`` against torch's own parser on made-up profiles (hypothesis): the same
events, field for field, whatever the nesting, overlaps, threads and names.

Each profile is fed to both: to ``from_kineto``, and to torch's
``profile._parse_kineto_results`` with ``EventList._build_tree`` (what
``prof.events()`` runs), then ``from_profiler``.  Intervals nest, touch, start
together, overlap partially and repeat names (an op re-dispatched to itself),
on one or two threads, with names torch drops and renames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.profiler_util import EventList

from layertime.measure.events import from_kineto, from_profiler

START_NS = 1_000_000
NAMES = ("aten::add", "aten::add", "aten::mm", "layertime::module::0", "layertime::step",
         "autograd::engine::evaluate_function: MmBackward0", "profiler::_record_function_exit",
         "aten::is_leaf", "ProfilerStep#2")


@dataclass
class FakeEvent:
    """A Kineto event as torch's parser reads it (the methods it calls, with defaults)."""

    _name: str
    _start: int
    _end: int
    _thread: int
    _seq: int
    _fwd: int
    _corr: int

    def name(self) -> str:
        return self._name

    def start_ns(self) -> int:
        return self._start

    def end_ns(self) -> int:
        return self._end

    def duration_ns(self) -> int:
        return self._end - self._start

    def start_thread_id(self) -> int:
        return self._thread

    def end_thread_id(self) -> int:
        return self._thread

    def sequence_nr(self) -> int:
        return self._seq

    def fwd_thread_id(self) -> int:
        return self._fwd

    def correlation_id(self) -> int:
        return self._corr

    def device_type(self) -> Any:
        return torch.autograd.DeviceType.CPU

    def activity_type(self) -> str:
        return "cpu_op"

    def is_async(self) -> bool:
        return False

    def is_hidden_event(self) -> bool:
        return False

    def linked_correlation_id(self) -> int:
        return 0

    def __getattr__(self, attr: str) -> Any:
        # Every other field torch's parser copies: empty or zero.
        if attr.startswith("_"):
            raise AttributeError(attr)
        empty: dict[str, Any] = {
            "overload_name": "", "metadata_json": "", "shapes": [], "concrete_inputs": [],
            "kwinputs": {}, "stack": [], "extra_meta": {}, "typed_metadata": {},
            "structured_input_shapes": [], "structured_input_strides": [], "dtypes": [],
            "is_user_annotation": False, "is_python_function": False, "flow_start": False,
        }
        value = empty.get(attr, 0)
        return lambda: value


@dataclass
class FakeResult:
    _events: list[FakeEvent]

    def events(self) -> list[FakeEvent]:
        return self._events

    def trace_start_ns(self) -> int:
        return START_NS


@st.composite
def profiles(draw: Any) -> FakeResult:
    """Intervals built by nesting children inside parents, with some shared starts and
    ends, some partial overlaps, a few threads, and shuffled order."""
    events: list[FakeEvent] = []

    def span(lo: int, hi: int, thread: int, depth: int) -> None:
        a = draw(st.integers(lo, hi))
        b = draw(st.integers(a, hi))
        if draw(st.booleans()) and depth and b < hi:  # overlap the parent's end
            b = draw(st.integers(b, hi + 5))
        events.append(FakeEvent(draw(st.sampled_from(NAMES)), START_NS + a, START_NS + b,
                                thread, draw(st.integers(-1, 5)), draw(st.sampled_from((0, 7))),
                                len(events) + 1))
        if depth < 4 and b > a:
            for _ in range(draw(st.integers(0, 3))):
                span(a, b, thread, depth + 1)

    for thread in draw(st.lists(st.sampled_from((1, 2)), min_size=1, max_size=3)):
        span(0, 100, thread, 0)
    order = draw(st.permutations(range(len(events))))
    return FakeResult([events[i] for i in order])


def via_torch(result: FakeResult) -> list[Any]:
    prof = torch.autograd.profiler.profile()  # never entered: only its parser is used
    parsed = prof._parse_kineto_results(result)
    tree = EventList(parsed)
    tree._build_tree()
    return from_profiler(tree)


@settings(max_examples=300, deadline=None)
@given(profiles())
def test_from_kineto_equals_torchs_parser(result: FakeResult) -> None:
    assert from_kineto(result) == via_torch(result)


def test_a_chain_of_same_named_only_children_collapses_as_torchs() -> None:
    # aten::add inside aten::add inside aten::add (each the only child), then a leaf.
    events = [FakeEvent("aten::add", START_NS + a, START_NS + b, 1, -1, 0, i + 1)
              for i, (a, b) in enumerate(((0, 50), (1, 49), (2, 48)))]
    events.append(FakeEvent("aten::mm", START_NS + 3, START_NS + 4, 1, -1, 0, 9))
    result = FakeResult(events)
    ours = from_kineto(result)
    assert [e.name for e in ours] == ["aten::add", "aten::mm"]
    assert ours[1].parent == ours[0].id
    assert ours == via_torch(result)
