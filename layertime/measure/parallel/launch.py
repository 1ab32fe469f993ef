"""``layertime profile --nproc N``: start N ranks on this machine with torchrun.

It runs ``python -m torch.distributed.run --nproc-per-node N --master-addr
127.0.0.1 --master-port <free port> -m layertime profile ... --ddp`` in its
own session, with stderr kept in a file.  Each rank writes a status file
(``distributed.StatusFile``: pid, progress, error) in a folder made for the
run.  When torchrun fails, the status files and torchrun's own failure
report (rank and exit code of each failed worker) give one line naming the
rank at fault: a rank that died without a word before one whose collective
failed because of it, and a collective's message names the rank it lost.

No process is left behind: on Ctrl-C or any error the launcher sends
SIGTERM to torchrun (which stops its workers), waits, then kills what is
left of torchrun's process group and of the ranks whose pids the status
files hold (checked to be still ours).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layertime.measure.parallel.health import STATUS_DIR_ENV

#: Seconds torchrun gets to stop its workers after SIGTERM before everything is killed.
STOP_GRACE_S = 10.0

_FAILURE = re.compile(
    r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)", re.MULTILINE
)


@dataclass(frozen=True)
class LaunchOutcome:
    """How the ranks ended: torchrun's exit status and, on failure, one line naming the rank."""

    returncode: int
    error: str | None
    #: Everything torchrun and the ranks wrote to stderr.
    log: str
    #: A failure after every rank finished and rank 0 wrote its outputs (kept as a warning).
    warning: str | None = None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The command line of a rank: ``argv`` without ``--nproc N``, with ``--ddp`` unless it
    is a sharded run (``--fsdp`` or ``--tp``)."""
    out: list[str] = []
    skip = False
    for tok in argv:
        if skip:
            skip = False
            continue
        flag = tok.split("=", 1)[0]
        if len(flag) >= 4 and "--nproc".startswith(flag):
            skip = "=" not in tok
            continue
        out.append(tok)
    sharded = any(t.split("=", 1)[0] in ("--fsdp", "--tp") for t in out)
    if "--ddp" not in out and not sharded:
        out.append("--ddp")
    return out


def torchrun_failures(log: str) -> dict[int, int]:
    """rank -> exit code of each worker torchrun reports as failed (negative: a signal)."""
    return {int(r): int(c) for r, c in _FAILURE.findall(log)}


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def diagnose(
    nproc: int, statuses: Mapping[int, Mapping[str, Any]], failures: Mapping[int, int], log: str
) -> str:
    """One line naming the rank at fault (pure: status files and torchrun's report)."""

    def where(st: Mapping[str, Any]) -> str:
        step = st.get("step")
        return f" during step {step}" if step else ""

    def died(r: int) -> str:
        st = statuses.get(r, {})
        code = failures.get(r)
        if code is None:
            how = "stopped without a result"
        elif code < 0:
            how = f"was killed by {_signal_name(code)}"
        else:
            how = f"exited with code {code}"
        return f"rank {r} {how}{where(st)}"

    def by_message(r: int) -> str:
        return str(statuses[r].get("message", f"rank {r} failed"))

    # 1. A rank torchrun saw fail that left no error of its own: it died.
    silent = [
        r for r in sorted(failures)
        if statuses.get(r, {}).get("state") not in ("error", "ok") and failures[r] != -15
    ]
    if silent:
        return died(silent[0])
    # 2. A rank's own error (bad input, a crash), before errors caused by losing a peer.
    own = [r for r in sorted(statuses) if statuses[r].get("state") == "error"
           and not statuses[r].get("comm")]
    if own:
        msg = by_message(own[0])
        return msg if msg.startswith("rank ") else f"rank {own[0]}: {msg}"
    comm = [r for r in sorted(statuses) if statuses[r].get("state") == "error"]
    if comm:
        return by_message(comm[0])
    if failures:
        return died(min(failures))
    missing = [r for r in range(nproc) if r not in statuses]
    if missing and len(missing) < nproc:
        return f"rank {missing[0]} never started"
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    last = lines[-1][:300] if lines else "no output"
    return f"torchrun failed before the ranks ran: {last}"


def finished_ranks(nproc: int, statuses: Mapping[int, Mapping[str, Any]]) -> bool:
    """Whether every rank finished its steps and left the group ("ok") and rank 0 also
    wrote its outputs ("done"): a failure torchrun reports after that (a rank crashing in
    its backend's teardown, the others then stopped) has lost nothing."""
    return (statuses.get(0, {}).get("state") == "done" and len(statuses) == nproc
            and all(st.get("state") in ("ok", "done") for st in statuses.values()))


def _read_statuses(folder: Path) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for f in folder.glob("rank*.json"):
        try:
            d = json.loads(f.read_text())
            out[int(d["rank"])] = d
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _ours(pid: int, folder: Path) -> bool:
    """Whether ``pid`` is still a rank of this launch (its environment names our folder)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{STATUS_DIR_ENV}={folder}".encode() in env.split(b"\0")


def _kill_leftovers(proc: subprocess.Popen[bytes], folder: Path) -> None:
    """SIGTERM torchrun, give it time to stop its workers, then kill whatever is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    for st in _read_statuses(folder).values():
        pid = int(st.get("pid", 0))
        if pid > 0 and _ours(pid, folder):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        alive = [
            int(st.get("pid", 0)) for st in _read_statuses(folder).values()
            if _ours(int(st.get("pid", 0)), folder)
        ]
        if not alive:
            break
        time.sleep(0.05)


def _env(nproc: int) -> dict[str, str]:
    env = dict(os.environ)
    cores = os.cpu_count() or 1
    # torchrun would set 1 thread per rank, with a warning; give each rank its share.
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if "COLUMNS" not in env and sys.stdout.isatty():
        env["COLUMNS"] = str(shutil.get_terminal_size().columns)
    return env


def launch(nproc: int, argv: Sequence[str]) -> LaunchOutcome:
    """Run ``layertime <argv>`` (a ``profile ... --ddp`` command line) on ``nproc`` ranks here.

    The ranks' stdout is this process's stdout (rank 0 prints the result);
    their stderr and torchrun's are returned in ``log``.
    """
    folder = Path(tempfile.mkdtemp(prefix="layertime-ddp-"))
    env = _env(nproc)
    env[STATUS_DIR_ENV] = str(folder)
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1",
        "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()),
        "-m", "layertime", *argv,
    ]
    try:
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, env=env, stderr=err, start_new_session=True)
            try:
                rc = proc.wait()
            finally:
                _kill_leftovers(proc, folder)
            err.seek(0)
            log = err.read().decode(errors="replace")
        error = None
        if rc != 0:
            statuses = _read_statuses(folder)
            error = diagnose(nproc, statuses, torchrun_failures(log), log)
            if finished_ranks(nproc, statuses):
                return LaunchOutcome(0, None, log, warning=(
                    f"after every rank finished and rank 0 wrote its results, torchrun "
                    f"reported: {error} (the results are complete)"))
        return LaunchOutcome(rc, error, log)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
