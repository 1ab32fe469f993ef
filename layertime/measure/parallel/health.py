"""When a data-parallel run fails: which rank died or hung, said in one line.

Each rank publishes its progress (step, stage) in torchrun's store from a
daemon thread (:class:`Heartbeat`); a rank whose collective fails reads
everyone's heartbeat twice (:func:`explain_failure`): a rank whose count did
not move is dead, one behind in (step, stage) hung.  Under ``layertime
profile --nproc`` (``launch.py``) each rank also writes a small status file
(:class:`StatusFile`) that the launcher reads.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from layertime.errors import LayertimeError, first_line
from layertime.files import write_text_atomic

#: Set by the ``--nproc`` launcher: a folder where each rank writes ``rank<N>.json``.
STATUS_DIR_ENV = "LAYERTIME_DDP_STATUS_DIR"
#: Seconds between heartbeats in the store.
HEARTBEAT_S = 0.5
#: Stages of a step, in order, for "which rank is behind".
STAGES = ("computing", "in the gradient all-reduce")


class Heartbeat:
    """This rank's progress (step, stage) published in the rendezvous store by a daemon thread.

    A rank whose collective fails reads everyone's heartbeat twice: a rank
    whose count did not move is dead; one behind in (step, stage) hung.
    """

    def __init__(self, store: Any, rank: int, world_size: int, status: StatusFile | None) -> None:
        self._store = store
        self.rank = rank
        self.world_size = world_size
        self._status = status
        self.step = 0
        self.stage = 0
        #: Set when this rank's collective failed: a rank alive without it never
        #: reached (or never left) the collective the others gave up on.
        self.failed = False
        self._beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="layertime-heartbeat", daemon=True)

    def start(self) -> None:
        self._publish()
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and wait for the thread: a daemon thread still inside the store's C++
        call when the interpreter finalizes aborts the process."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def mark(self, step: int, stage: int) -> None:
        """Where this rank is now (the status file is written at once, the store at the next beat)."""
        self.step, self.stage = step, stage
        if self._status is not None:
            self._status.progress(step, stage)

    def beat(self) -> None:
        """Publish now (not at the next beat)."""
        self._publish()

    def _publish(self) -> None:
        self._beats += 1
        value = json.dumps({"beats": self._beats, "step": self.step, "stage": self.stage,
                            "failed": self.failed})
        try:
            self._store.set(f"layertime/heartbeat/{self.rank}", value)
        except Exception:  # the store is gone: the launcher will say why
            pass
        if self._status is not None:
            self._status.progress(self.step, self.stage)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._publish()

    def read(self) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        for r in range(self.world_size):
            key = f"layertime/heartbeat/{r}"
            try:
                if self._store.check([key]):
                    out[r] = json.loads(self._store.get(key))
            except Exception:
                pass
        return out


class StatusFile:
    """``rank<N>.json`` in the launcher's folder: pid, state, progress, error."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.path = folder / f"rank{rank}.json"
        self.data: dict[str, Any] = {"rank": rank, "pid": os.getpid(), "state": "running"}
        self._lock = threading.Lock()
        self._last: tuple[int, int] | None = None

    @classmethod
    def from_env(cls, rank: int) -> StatusFile | None:
        folder = os.environ.get(STATUS_DIR_ENV)
        return cls(Path(folder), rank) if folder else None

    def write(self, **fields: Any) -> None:
        with self._lock:
            self.data.update(fields)
            try:
                write_text_atomic(self.path, json.dumps(self.data))
            except LayertimeError:
                pass

    def done(self) -> None:
        """Rank 0's outputs (table, JSON, reports) are all written: what the launcher checks
        before it calls a rank's failure at exit harmless (:func:`finished_ranks`)."""
        self.write(state="done")

    def progress(self, step: int, stage: int) -> None:
        if self._last != (step, stage):
            self._last = (step, stage)
            self.write(step=step, stage=stage)


def is_comm_failure(e: BaseException) -> bool:
    if isinstance(e, dist.DistError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        w in text for w in ("gloo", "nccl", "connection", "timed out", "timeout", "socket", "peer")
    )


def explain_failure(
    e: BaseException, heartbeat: Heartbeat | None, rank: int, timeout_s: float
) -> str:
    """One line naming the rank that died or hung, from the heartbeats, when it can."""
    what = first_line(e, 300)
    if heartbeat is None:
        return f"rank {rank}: communication failed: {what}"
    me = (heartbeat.step, heartbeat.stage)
    heartbeat.failed = True
    heartbeat.beat()
    first = heartbeat.read()
    time.sleep(3 * HEARTBEAT_S)
    second = heartbeat.read()
    others = [r for r in range(heartbeat.world_size) if r != rank]
    dead = [
        r for r in others
        if r not in second or second[r].get("beats") == first.get(r, {}).get("beats")
    ]
    if dead:
        r = dead[0]
        step = second.get(r, {}).get("step")
        during = f" during step {step}" if step else ""
        return (
            f"rank {r} died{during} (its heartbeat stopped); rank {rank} lost it: {what}"
        )
    behind = [
        r for r in others if (second[r].get("step", 0), second[r].get("stage", 0)) < me
    ]
    if behind:
        r = behind[0]
        st = second[r]
        stage = STAGES[st.get("stage", 0)] if st.get("stage", 0) < len(STAGES) else "?"
        return (
            f"rank {r} stopped responding in step {st.get('step')} ({stage}); rank {rank} "
            f"gave up after the {timeout_s:g} s timeout (--ddp-timeout)"
        )
    # Alive, not behind by our marks, and its collective did not fail: it never came to
    # the collective the others waited in (a sharded step marks no stages).
    stuck = [r for r in others if not second[r].get("failed")]
    if stuck:
        r = stuck[0]
        return (
            f"rank {r} stopped responding in step {second[r].get('step')} (its collectives "
            f"did not fail: it never reached the one rank {rank} waited in); rank {rank} gave "
            f"up after the {timeout_s:g} s timeout (--ddp-timeout)"
        )
    return f"rank {rank}: communication failed in step {me[0]}: {what}"


def read_status(folder: Path, rank: int) -> dict[str, Any]:
    """A rank's status file as last written ({} when missing or being replaced)."""
    try:
        data = json.loads((folder / f"rank{rank}.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def mark_done(rank: int) -> None:
    """Under the ``--nproc`` launcher, say this rank's outputs are written (keeping what its
    status file holds); nothing elsewhere."""
    folder = os.environ.get(STATUS_DIR_ENV)
    if folder:
        status = StatusFile(Path(folder), rank)
        status.data.update(read_status(Path(folder), rank))
        status.done()


def wait_for_rank0(timeout_s: float = 120.0, poll_s: float = 0.05) -> None:
    """Under the ``--nproc`` launcher, hold a rank other than 0 until rank 0 has written its
    outputs (or failed, or ``timeout_s`` passed): torchrun stops every rank when one exits
    with an error, and a rank that fails on its way out (a backend's teardown) must not
    stop rank 0 mid-write."""
    folder = os.environ.get(STATUS_DIR_ENV)
    if not folder:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if read_status(Path(folder), 0).get("state") in ("done", "error"):
            return
        time.sleep(poll_s)
