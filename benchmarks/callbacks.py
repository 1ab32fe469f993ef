"""Benchmark the framework callbacks: training speed outside the window, and the window's table.

Run from the repository root::

    python benchmarks/callbacks.py              # Lightning and the HF Trainer, 5 pairs each (~2 min)
    python benchmarks/callbacks.py --pairs 3 --frameworks lightning

A benchmark, not a test: it prints, never asserts.  For each framework a
small CNN (two conv layers, pooling, two fully connected layers; 3x32x32
synthetic images, batch 32, SGD; a real ``DataLoader``) is trained from
scratch ``--pairs`` times without the callback and ``--pairs`` times with
it, alternating (without, with, with, without, ...: ABBA, so a drift in the
machine's load hits both sides alike), in this one process.  Every run has
the same timing callback, which records the time at each optimizer step's
end; throughput is the steps after the window (``--measure-from`` to the
last) divided by their wall time.  The callback's window is steps
``--start`` to ``--start + --window`` (plain and traced alternating), so
the measured steps come well after it: the claim under test is that the
callback leaves training untouched outside its window.

Printed: every run's throughput (steps/s), each pair's ratio with/without,
their median and spread (min..max), and the table of the window of the last
run with the callback; each per second of wall time and per second of this
process's CPU time (all its threads: a thread or a leftover global callback of
ours would show there too), which other work on a shared machine moves far
less than wall time.  The load average after each run is printed: read the
spread.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

IMAGES, CLASSES, BATCH = 1024, 10, 32


class Images(torch.utils.data.Dataset):
    def __init__(self, dict_items: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(IMAGES, 3, 32, 32, generator=g)
        self.y = torch.randint(0, CLASSES, (IMAGES,), generator=g)
        self.dict_items = dict_items

    def __len__(self) -> int:
        return IMAGES

    def __getitem__(self, i: int) -> Any:
        if self.dict_items:
            return {"pixel_values": self.x[i], "labels": self.y[i]}
        return self.x[i], self.y[i]


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, CLASSES),
    )


# -- one training run per framework; returns (step-end times, the callback or None) ----


def run_lightning(with_callback: bool, a: argparse.Namespace) -> tuple[list[tuple[float, float]], Any]:
    import lightning.pytorch as L

    from layertime.integrations.lightning import LayertimeCallback

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = cnn()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    times: list[tuple[float, float]] = []

    class Clock(L.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            times.append((time.perf_counter(), time.process_time()))

    cb = LayertimeCallback(start_step=a.start, steps=a.window, verbose=False) \
        if with_callback else None
    trainer = L.Trainer(
        max_steps=a.steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
        callbacks=[Clock()] + ([cb] if cb is not None else []),
    )
    trainer.fit(Net(), torch.utils.data.DataLoader(Images(), batch_size=BATCH, shuffle=True))
    return times, cb


def run_hf(with_callback: bool, a: argparse.Namespace) -> tuple[list[tuple[float, float]], Any]:
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    from layertime.integrations.hf import LayertimeTrainerCallback

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = cnn()

        def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
            logits = self.net(pixel_values)
            return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}

    times: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            times.append((time.perf_counter(), time.process_time()))

    cb = LayertimeTrainerCallback(start_step=a.start, steps=a.window, verbose=False) \
        if with_callback else None
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, report_to=[], use_cpu=True, max_steps=a.steps,
            per_device_train_batch_size=BATCH, learning_rate=0.01, optim="sgd",
            logging_steps=10, disable_tqdm=True, save_strategy="no",
        )
        trainer = Trainer(Net(), args, train_dataset=Images(dict_items=True),
                          callbacks=[Clock()] + ([cb] if cb is not None else []))
        trainer.remove_callback(PrinterCallback)  # it prints the logs (they are still made)
        trainer.train()
    return times, cb


RUNNERS: dict[str, Callable[[bool, argparse.Namespace], tuple[list[tuple[float, float]], Any]]] = {
    "lightning": run_lightning,
    "hf": run_hf,
}


def throughput(times: list[tuple[float, float]], first: int, clock: int = 0) -> float:
    """Steps per second over the optimizer steps ``first+1`` to the last: of wall time
    (``clock`` 0), or of this process's CPU time (1: all its threads; what other
    processes on a shared machine move least)."""
    span = [t[clock] for t in times[first:]]
    return (len(span) - 1) / (span[-1] - span[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frameworks", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    p.add_argument("--pairs", type=int, default=5, help="runs with and without (each)")
    p.add_argument("--steps", type=int, default=80, help="optimizer steps per run")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the machine is shared, fewer threads wait less)")
    p.add_argument("--start", type=int, default=5, help="the callback's start_step")
    p.add_argument("--window", type=int, default=6, help="the callback's steps")
    p.add_argument("--measure-from", type=int, default=20,
                   help="throughput over the steps after this one (after the window)")
    a = p.parse_args(argv)
    if a.measure_from < a.start + a.window + 2 or a.measure_from >= a.steps - 5:
        p.error("--measure-from must be after the window and leave steps to measure")
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; small CNN, batch "
          f"{BATCH}, 3x32x32; {a.steps} steps per run, window steps {a.start}.."
          f"{a.start + a.window - 1}, throughput over steps {a.measure_from + 1}..{a.steps}")
    for fw in a.frameworks:
        runner = RUNNERS[fw]
        runner(False, a)  # warm-up: imports, allocator, thread pools
        without: list[float] = []
        with_: list[float] = []
        cpu_without: list[float] = []
        cpu_with: list[float] = []
        load: list[float] = []
        last_cb: Any = None
        for i in range(a.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            for flag in order:
                gc.collect()  # the previous run's garbage is not collected inside this one
                times, cb = runner(flag, a)
                load.append(os.getloadavg()[0])
                (with_ if flag else without).append(throughput(times, a.measure_from))
                (cpu_with if flag else cpu_without).append(
                    throughput(times, a.measure_from, clock=1))
                if cb is not None:
                    last_cb = cb
                print(f"  {fw} pair {i + 1} {'with' if flag else 'without'}: "
                      f"{(with_ if flag else without)[-1]:.2f} steps/s", file=sys.stderr)
        print(f"\n== {fw}: throughput outside the window (steps/s) ==")
        print(f"  load average (1 min) after each run: {min(load):.1f} to {max(load):.1f} "
              f"on {os.cpu_count()} CPUs: other work on the machine moves wall times")
        for title, off, on in (("wall time", without, with_),
                               ("CPU time of this process", cpu_without, cpu_with)):
            ratios = [w / o for w, o in zip(on, off)]
            print(f"  -- per second of {title}")
            print("  without callback: " + "  ".join(f"{x:.2f}" for x in off))
            print("  with callback:    " + "  ".join(f"{x:.2f}" for x in on))
            print("  ratio with/without per pair: " + "  ".join(f"{r:.3f}" for r in ratios))
            print(f"  median ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
                  f"max {max(ratios):.3f}, {len(ratios)} pairs; "
                  f"{'encloses' if min(ratios) <= 1 <= max(ratios) else 'does not enclose'} 1); "
                  f"median throughput without {statistics.median(off):.2f}, with "
                  f"{statistics.median(on):.2f} steps/s")
        run = last_cb.result if last_cb is not None else None
        if run is None:
            print(f"  no window result: {getattr(last_cb, 'skipped', None)}")
            continue
        from layertime.render.table import render_text

        print(f"\n== {fw}: the window's table (last run with the callback) ==")
        print(render_text(run, width=120))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
