"""Charge a traced step's collectives (FSDP2, tensor parallelism, any collective op) to the
layers that cause them, split into exposed and hidden.  Pure: it reads the charges that
``attribute.py`` made of the step's events.

* **Whose.**  A communication owner of scope ``unit`` (an FSDP unit's all-gathers, its
  reduce-scatter, its copies in and out, resharding and hooks) is shared among the unit's
  own layers (those not inside an inner unit) by parameter elements: the all-gather
  moves their parameters, the reduce-scatter their gradients, in proportion to their
  elements.  A unit whose own layers hold no parameters charges the unit's module.
  Scope ``layer`` (a tensor-parallel layer's all-reduce, in its range or its backward)
  is that layer's.  Scope ``step`` (a collective in the optimizer step, in gradient
  clipping) stays in that step row.
* **Exposed.**  Training-thread time on a collective (launching it, FSDP's copy-in and
  copy-out, waiting for it) lengthened the step: it is *exposed*, and it is in the rows
  (a layer's ``comm_exposed_s`` is in its ``total_s``; their sum is ``Phases.comm_exposed_s``).
* **Hidden.**  The backend runs each collective on its own (gloo's worker threads on the
  CPU): the part of that busy time during which the training thread was not in
  communication overlapped compute the rows already hold: *hidden*, not added to them.
  Each backend event is matched to the earliest unmatched call of its kind launched
  before it (calls on one process group run in order; gloo's reduce-scatter is an
  all-reduce on its thread).  On the CPU FSDP2's collectives block the thread (its
  prefetching needs streams), so there nearly all of them is exposed.
* **On CUDA** rows are kernel times: a collective's kernels run on NCCL's stream beside
  compute, and the part of their time no compute kernel overlapped is exposed, the rest
  hidden (``attribute_step``'s ``comm_exposed_fraction``, one fraction for the step's
  collectives, shared by their kernel time: per-kernel overlap is not split finer).
* **Rows add up.**  Exposed time moves from the step's communication owners to the
  ``comm`` step row and, per layer, to ``CommCharge.exposed_s``; nothing else changes,
  so the rows still add up to the step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from layertime.measure.attribute import CollectiveCall, CollectiveCharge, CommCharge, CommKey, StepCharges
from layertime.measure.events import GLOO_WORK

#: gloo's event names by the kinds of call they can serve.
_GLOO_SERVES = {
    "all_gather": ("all_gather",),
    "allgather": ("all_gather",),
    "all_reduce": ("all_reduce", "reduce_scatter"),
    "allreduce": ("all_reduce", "reduce_scatter"),
    "reduce_scatter": ("reduce_scatter",),
    "broadcast": ("broadcast",),
    "all_to_all": ("all_to_all",),
    "alltoall": ("all_to_all",),
}


def _union(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _outside(span: tuple[float, float], covered: Sequence[tuple[float, float]]) -> float:
    """Length of ``span`` not inside the (sorted, disjoint) ``covered`` intervals."""
    a, b = span
    inside = sum(max(0.0, min(b, y) - max(a, x)) for x, y in covered)
    return max(0.0, (b - a) - inside)


def match_backend(
    calls: Sequence[CollectiveCall], busy: Sequence[tuple[str, float, float]]
) -> dict[int, list[tuple[float, float]]]:
    """call index -> the backend events that ran it (see the module doc)."""
    order = sorted(range(len(calls)), key=lambda i: calls[i].start_us)
    taken: set[int] = set()
    out: dict[int, list[tuple[float, float]]] = {}
    for name, a, b in sorted(busy, key=lambda x: x[1]):
        op = name[len(GLOO_WORK):] if name.startswith(GLOO_WORK) else name
        serves = _GLOO_SERVES.get(op)
        for i in order:
            c = calls[i]
            if i in taken or c.start_us > a:
                continue
            if serves is not None and c.key[2] not in serves:
                continue
            taken.add(i)
            out[i] = [(a, b)]
            break
    return out


def charge_collectives(
    charges: StepCharges,
    unit_layers: Mapping[str, Mapping[int, int]],
    unit_module: Mapping[str, int],
    module_unit: Mapping[int, str] | None = None,
) -> StepCharges:
    """``charges`` with its collectives charged to layers (see the module doc).

    ``unit_layers``: unit path -> {module index: parameter elements} of the unit's own
    layers; ``unit_module``: unit path -> the unit's module index; ``module_unit``: module
    index -> the unit holding it (FSDP1's ranges name no unit: the module they run in
    does).  A collective a unit's own module issues is the unit's.
    """
    module_unit = module_unit or {}
    unit_of_module = {i: u for u, i in unit_module.items()}

    def owner(key: CommKey) -> tuple[str, str | int]:
        scope, target = key[0], key[1]
        if scope == "fsdp1":
            return "unit", module_unit.get(int(target), "")
        if scope == "layer" and int(target) in unit_of_module:
            return "unit", unit_of_module[int(target)]
        return scope, target

    if not charges.collectives and not charges.collective_calls:
        return charges
    covered = _union(charges.comm_intervals)
    matched = match_backend(charges.collective_calls, charges.backend_busy)
    hidden: dict[CommKey, float] = {}
    busy: dict[CommKey, float] = {}
    count: dict[CommKey, int] = {}
    nbytes: dict[CommKey, int] = {}
    for i, call in enumerate(charges.collective_calls):
        k = call.key
        count[k] = count.get(k, 0) + 1
        nbytes[k] = nbytes.get(k, 0) + call.nbytes
        for span in matched.get(i, []):
            busy[k] = busy.get(k, 0.0) + (span[1] - span[0])
            hidden[k] = hidden.get(k, 0.0) + _outside(span, covered)
    for k, v in charges.device_hidden.items():  # CUDA: from kernel overlap
        hidden[k] = hidden.get(k, 0.0) + v
        busy[k] = busy.get(k, 0.0) + v + charges.collectives.get(k, 0.0)
    keys = list(dict.fromkeys([*charges.collectives, *count]))
    step = dict(charges.step)
    comm = {i: CommCharge(c.comm_s, c.exposed_s) for i, c in charges.comm.items()}
    comm_bytes = dict(charges.comm_bytes)
    exposed_total = 0.0
    rows: list[CollectiveCharge] = []
    for k in keys:
        scope, target = owner(k)
        exposed = charges.collectives.get(k, 0.0)
        hid = hidden.get(k, 0.0)
        rows.append(CollectiveCharge((scope, target, k[2], k[3]), count.get(k, 0),
                                     nbytes.get(k, 0), exposed, hid, busy.get(k, 0.0)))
        if scope == "step":
            step[str(target)] = step.get(str(target), 0.0) + exposed
            continue
        if scope == "unit":
            shares = {i: n for i, n in unit_layers.get(str(target), {}).items() if n > 0}
            if not shares:
                shares = {unit_module.get(str(target), 0): 1}
        else:
            shares = {int(target): 1}
        total = sum(shares.values())
        for idx, n in shares.items():
            f = n / total
            old = comm.get(idx, CommCharge(0.0, 0.0))
            comm[idx] = CommCharge(old.comm_s + (exposed + hid) * f, old.exposed_s + exposed * f)
            comm_bytes[idx] = comm_bytes.get(idx, 0) + round(nbytes.get(k, 0) * f)
        exposed_total += exposed
    step["comm"] = step.get("comm", 0.0) + exposed_total
    return replace(charges, step=step, comm=comm, comm_bytes=comm_bytes, collectives={},
                   device_hidden={}, collective_charges=rows)
