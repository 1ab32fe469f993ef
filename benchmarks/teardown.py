"""How often a sharded rank aborts at exit, with and without freeing its model first.

Run from the repository root::

    python benchmarks/teardown.py            # 20 jobs each way, 4 gloo ranks
    python benchmarks/teardown.py --jobs 10 --nproc 2

Each job starts ``--nproc`` ranks with torchrun (gloo on 127.0.0.1).  Every rank shards a
two-layer model with FSDP2, trains one step inside a function (so the model is held only
by FSDP2's reference cycles once it returns), then leaves the process group either

* **destroy**: ``dist.destroy_process_group()`` alone, the model left to the interpreter's
  teardown; or
* **leave**: ``layertime.measure.parallel.ranks.leave_process_group()``, which collects the
  garbage first (what layertime's ranks and its sharded test scripts do).

A job fails when any rank exits non-zero; the line torch prints for it is counted
(``terminate called without an active exception`` is the abort this guards against).
Aborts depend on thread timing: they are most frequent with more ranks than cores.  A
benchmark, not a test: it prints counts and never asserts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ABORT = "terminate called without an active exception"


def worker(how: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    def train() -> None:
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
        for layer in model:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        model(torch.randn(2, 64)).sum().backward()

    dist.init_process_group("gloo")
    train()
    if how == "leave":
        from layertime.measure.parallel.ranks import leave_process_group

        leave_process_group()
    else:
        dist.destroy_process_group()


def job(how: str, nproc: int) -> tuple[bool, bool]:
    """(failed, aborted as above) for one torchrun job."""
    from layertime.measure.parallel.launch import free_port

    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), __file__,
           "--worker", how]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode != 0, ABORT in proc.stderr


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=20, help="jobs each way (default 20)")
    ap.add_argument("--nproc", type=int, default=4, help="ranks per job (default 4)")
    ap.add_argument("--worker", choices=("destroy", "leave"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    print(f"{args.jobs} jobs each way, {args.nproc} gloo ranks, FSDP2 of a two-layer model, "
          f"{os.cpu_count()} cores")
    print(f"{'how the rank leaves':<44}{'failed':>8}{'aborted':>9}")
    for how, text in (("destroy", "destroy_process_group() alone"),
                      ("leave", "leave_process_group() (garbage freed first)")):
        failed = aborted = 0
        for _ in range(args.jobs):
            f, a = job(how, args.nproc)
            failed += f
            aborted += a
        print(f"{text:<44}{failed:>5}/{args.jobs:<2}{aborted:>6}/{args.jobs:<2}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
