"""The lines a run attributed from trace files adds to its table: where it came from, what
its rows are, and, for several ranks, each rank's step and communication (a trace has no
unprofiled step, so the lines say what a measured run's would say from the traced steps)."""

from __future__ import annotations

from layertime.render.fmt import ms
from layertime.results.run import Run


def trace_lines(run: Run) -> list[str]:
    """Source, machine and what the rows are, for a run with ``run.trace``; else []."""
    t = run.trace
    if t is None:
        return []
    env = run.environment
    lines = [
        f"attributed from {t.describe()}; recorded on {env.host} ({env.device_name}) · "
        f"{run.optimizer} · timing: {run.timing} · update split by {run.update_split}",
    ]
    if run.timing == "cuda-kernel-time":
        lines.append(
            f"rows: each layer's GPU kernel time in the trace's steps; unattributed: the GPU's "
            f"idle time in them (and kernels outside any layer); they add up to "
            f"{ms(run.profiled_step_s)} ms, the traced step (no unprofiled step in a trace)")
    else:
        lines.append(f"rows: CPU self time of each layer's ops in the trace's steps; they add up "
                     f"to the traced step ({ms(run.profiled_step_s)} ms, mean; no unprofiled "
                     "step in a trace, so no overhead ratio)")
    return lines


def trace_comm_lines(run: Run) -> list[str]:
    """Several ranks' traces, or one rank's collectives: what the trace's communication was
    charged as, and each rank's traced step."""
    if run.trace is None or (run.world_size <= 1 and not run.collectives):
        return []
    hidden = run.comm_s - run.phases.comm_exposed_s
    lines = [
        f"{run.world_size} rank{'s' if run.world_size != 1 else ''}, {run.backend or '?'}: "
        f"collectives from the trace, comm {ms(run.comm_s)} ms per step, "
        f"{ms(run.phases.comm_exposed_s)} ms exposed, {ms(hidden)} ms hidden",
        "  each collective is charged to the layer (or FSDP unit) whose range or backward "
        "launched it: exposed, the training thread's time on it (in total ms); hidden, the "
        "backend's time beside compute",
    ]
    for r in run.ranks:
        lines.append(
            f"  rank {r.rank} ({r.host}): traced step {ms(r.profiled_step_s)} ms = compute "
            f"{ms(r.compute_s)} + exposed comm {ms(r.comm_exposed_s)} ms (of which "
            f"~{ms(r.wait_s)} ms waiting for the slowest rank)")
    return lines
