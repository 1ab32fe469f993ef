"""What a data-parallel run adds to its result (``Run.ranks``, ``Run.buckets``,
``Run.link``): one summary per rank, DDP's gradient buckets, the link measured.

Torch-free, like the rest of the result model; JSON in ``docs/schema.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RankRow:
    """One rank of a data-parallel run, to spot a straggler.

    ``compute_s`` is the profiled step minus its exposed communication: the
    rank that computes longest makes every other rank wait in the all-reduce.
    """

    rank: int
    host: str
    step_s: float
    profiled_step_s: float
    compute_s: float
    comm_s: float
    comm_exposed_s: float
    #: Of ``comm_exposed_s``, the estimated wait for the slowest rank's compute
    #: (its ``compute_s`` minus this rank's): imbalance, not the network.
    wait_s: float = 0.0
    #: This rank's memory (0 when not measured): its step's peak, what its layers saved
    #: for backward, and its parameters, gradients and optimizer state (with sharding,
    #: its share: the local shards).
    peak_bytes: int = 0
    saved_bytes: int = 0
    params_bytes: int = 0
    grads_bytes: int = 0
    optimizer_state_bytes: int = 0


@dataclass(frozen=True)
class BucketRow:
    """One DDP gradient bucket, as measured (means over traced steps and ranks).

    ``allreduce_s`` is the all-reduce's wall time from its launch to its
    completion; ``comm_s`` its share of the communication busy time (buckets
    in flight together share it equally), ``exposed_s`` the part of that after
    backward compute ended.  ``layers`` maps layer name to gradient bytes.
    """

    index: int
    bytes: int
    layers: Mapping[str, int]
    allreduce_s: float
    comm_s: float
    exposed_s: float


@dataclass(frozen=True)
class LinkEstimate:
    """A link measured with all-reduces outside any step, in the ring model's terms."""

    bandwidth_gbps: float
    latency_us: float
    method: str = ""
