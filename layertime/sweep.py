"""Sweeps: profile every configuration of a cartesian product and keep each result.

Each configuration is stored (and committed) as soon as it finishes, so an
interrupted sweep keeps what it measured, and running the same sweep again
skips the configurations already done (unless ``force``).  A configuration
that runs out of memory, or that the model cannot take, is stored as
``failed`` with its reason and the sweep goes on.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from layertime.errors import BadValue, LayertimeError
from layertime.measure.runner import MeasureOptions, profile_workload
from layertime.models import ModelRef
from layertime.results.run import Run
from layertime.results.sweep import Crossover, SeqCrossover, SweepPoint, SweepResult
from layertime.store import Store, config_key
from layertime.workload import ImageInput, InputSpec, TokenInput, WorkloadSpec

#: on_progress(done, total, label, eta_s): eta_s is None until one run is timed.
SweepProgress = Callable[[int, int, str, "float | None"], None]
#: Measures one configuration (``measure.runner.profile_workload``; tests inject one).
ProfileFn = Callable[[WorkloadSpec, MeasureOptions], Run]


def parse_axis(text: str, name: str, *, kind: type = int) -> tuple[Any, ...]:
    """Parse a comma-separated axis such as ``1,8,32``; errors are one line."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise BadValue(f"--{name}: empty value in {text!r}")
    out: list[Any] = []
    for p in parts:
        if kind is int:
            try:
                v = int(p)
            except ValueError:
                raise BadValue(f"--{name}: {p!r} is not a whole number") from None
            if v < 1:
                raise BadValue(f"--{name}: {v} must be at least 1")
            out.append(v)
        else:
            out.append(p)
    if len(set(out)) != len(out):
        raise BadValue(f"--{name}: repeated value in {text!r}")
    return tuple(out)


@dataclass(frozen=True)
class SweepAxes:
    """The axes of a sweep; the sweep runs their cartesian product."""

    models: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    image_sizes: tuple[int | None, ...] = (None,)
    devices: tuple[str, ...] = ("auto",)
    dtypes: tuple[str, ...] = ("float32",)
    optimizers: tuple[str, ...] = ("sgd",)
    steps: int = 3
    warmup_steps: int = 1
    #: Token inputs: sequence lengths (None: each model's own input).
    seq_lens: tuple[int | None, ...] = (None,)
    #: ``hf:`` models: ``KEY=VALUE`` config overrides, the same for every configuration.
    model_config: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(s is not None for s in self.seq_lens) and any(
            i is not None for i in self.image_sizes
        ):
            raise BadValue("give --image-sizes or --seq-lens, not both")
        for model in self.models:
            ModelRef(model, self.model_config)  # --config applies to hf: models only

    def configs(self) -> list[dict[str, Any]]:
        """One dict per configuration, in a stable order (batch size varies fastest, then
        sequence length).  ``seq_len`` and ``config`` appear only when given, so image
        sweeps keep the keys (and the stored configurations) they had."""
        out = []
        for model, image, device, dtype, opt, seq, batch in itertools.product(
            self.models,
            self.image_sizes,
            self.devices,
            self.dtypes,
            self.optimizers,
            self.seq_lens,
            self.batch_sizes,
        ):
            cfg: dict[str, Any] = {
                "model": model,
                "batch_size": batch,
                "image_size": image,
                "device": device,
                "dtype": dtype,
                "optimizer": opt,
                "steps": self.steps,
                "warmup_steps": self.warmup_steps,
            }
            if seq is not None:
                cfg["seq_len"] = seq
            if self.model_config:
                cfg["config"] = list(self.model_config)
            out.append(cfg)
        return out

    @staticmethod
    def workload(config: Mapping[str, Any]) -> WorkloadSpec:
        """The workload of one configuration."""
        image, seq = config["image_size"], config.get("seq_len")
        spec: InputSpec | None = (
            TokenInput(seq) if seq else ImageInput.square(image) if image else None
        )
        return WorkloadSpec(
            ModelRef(config["model"], tuple(config.get("config") or ())),
            spec,
            batch_size=config["batch_size"],
            device=config["device"],
            dtype=config["dtype"],
            optimizer=config["optimizer"],
        )

    @staticmethod
    def options(config: Mapping[str, Any]) -> MeasureOptions:
        return MeasureOptions(steps=config["steps"], warmup_steps=config["warmup_steps"])


def _share(run: Run, kind: str) -> float:
    k = run.by_kind().get(kind)
    return k.share if k else 0.0


def crossovers(points: Sequence[SweepPoint]) -> list[Crossover]:
    """Where ``share(linear) - share(conv)`` changes sign along the batch axis.

    Interpolated linearly in log2(batch size) between the two measured batch
    sizes around the change; configurations that failed are left out.
    """
    groups: dict[tuple[Any, ...], list[tuple[int, float]]] = {}
    labels: dict[tuple[Any, ...], dict[str, Any]] = {}
    for p in points:
        if p.run is None:
            continue
        c = p.config
        key = (c["model"], c["image_size"], c["device"], c["dtype"], c["optimizer"],
               c.get("seq_len"))
        labels[key] = {
            "model": c["model"],
            "image_size": c["image_size"],
            "device": p.run.device,
            "dtype": c["dtype"],
            "optimizer": c["optimizer"],
            **({"seq_len": c["seq_len"]} if c.get("seq_len") is not None else {}),
        }
        groups.setdefault(key, []).append(
            (c["batch_size"], _share(p.run, "linear") - _share(p.run, "conv"))
        )
    out = []
    for key, series in groups.items():
        found = log_crossing(sorted(series))
        if found is not None:
            out.append(Crossover(labels[key], *found))
    return out


def _role_share(run: Run, role: str) -> float:
    r = run.roles().get(role)
    return r.share if r else 0.0


def log_crossing(series: Sequence[tuple[int, float]]) -> tuple[float, int, int] | None:
    """Where ``d`` first changes sign along ``x`` (sorted pairs ``(x, d)``): interpolated
    linearly in log2(x); (x, x below, x above), or None when it never does."""
    for (a1, d1), (a2, d2) in zip(series, series[1:]):
        if d1 > 0 >= d2 or d1 < 0 <= d2:
            x1, x2 = math.log2(a1), math.log2(a2)
            return 2 ** (x1 + (0 - d1) * (x2 - x1) / (d2 - d1)), a1, a2
    return None


def seq_crossovers(points: Sequence[SweepPoint]) -> list[SeqCrossover]:
    """Where ``share(attention) - share(mlp)`` (roles) changes sign along the sequence axis.

    Interpolated linearly in log2(seq_len) between the two measured lengths
    around the change, per (model, batch, device, dtype, optimizer); failed
    configurations are left out.
    """
    groups: dict[tuple[Any, ...], list[tuple[int, float]]] = {}
    labels: dict[tuple[Any, ...], dict[str, Any]] = {}
    for p in points:
        c = p.config
        if p.run is None or c.get("seq_len") is None:
            continue
        key = (c["model"], c["batch_size"], c["device"], c["dtype"], c["optimizer"])
        labels[key] = {"model": c["model"], "batch": c["batch_size"], "device": p.run.device,
                       "dtype": c["dtype"], "optimizer": c["optimizer"]}
        groups.setdefault(key, []).append(
            (c["seq_len"], _role_share(p.run, "attention") - _role_share(p.run, "mlp"))
        )
    out = []
    for key, series in groups.items():
        ordered = sorted(series)
        found = log_crossing(ordered)
        if found is not None:
            at, below, above = found
            after = dict(ordered)[above]  # attention minus MLP just above the crossing
            out.append(SeqCrossover(labels[key], at, below, above, attention_above=after > 0))
    return out


def _result(sweep_id: int, points: Sequence[SweepPoint]) -> SweepResult:
    return SweepResult(sweep_id, tuple(points), tuple(crossovers(points)),
                       tuple(seq_crossovers(points)))


def run_sweep(
    axes: SweepAxes,
    store: Store,
    *,
    force: bool = False,
    profile_fn: ProfileFn = profile_workload,
    on_progress: SweepProgress | None = None,
) -> SweepResult:
    """Profile every configuration of ``axes``, storing each as it finishes.

    A ``KeyboardInterrupt`` marks the sweep ``interrupted`` and propagates;
    the configurations finished before it stay stored.
    """
    progress = on_progress or (lambda done, total, label, eta: None)
    configs = axes.configs()
    sweep_id = store.add(
        "sweep",
        model=",".join(axes.models),
        config={"axes": [c for c in configs]},
        status="interrupted",
    )
    points: list[SweepPoint] = []
    durations: list[float] = []
    try:
        for i, cfg in enumerate(configs):
            label = f"{cfg['model']} batch {cfg['batch_size']}" + (
                f" image {cfg['image_size']}" if cfg["image_size"] else ""
            ) + (f" seq {cfg['seq_len']}" if cfg.get("seq_len") else "")
            remaining = len(configs) - i
            eta = (sum(durations) / len(durations)) * remaining if durations else None
            progress(i, len(configs), label, eta)
            done = None if force else store.find_ok(config_key(cfg))
            if done is not None and done.result is not None:
                points.append(SweepPoint(cfg, "skipped", done.id, Run.from_dict(done.result)))
                continue
            t0 = time.perf_counter()
            point = _measure_point(cfg, store, sweep_id, profile_fn)
            if point.run is not None:
                durations.append(time.perf_counter() - t0)
            points.append(point)
        progress(len(configs), len(configs), "done", 0.0)
    except BaseException as e:
        partial = _result(sweep_id, points)
        store.update(
            sweep_id,
            status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
            result=partial.summary(),
            error=f"{type(e).__name__}: {e}"[:500],
        )
        raise
    result = _result(sweep_id, points)
    store.update(sweep_id, status="ok", result=result.summary())
    return result


def _measure_point(
    cfg: dict[str, Any], store: Store, sweep_id: int, profile_fn: ProfileFn
) -> SweepPoint:
    """Profile one configuration and store it at once, finished or failed (the reason kept).

    The stored configuration carries the workload's description beside the
    axes' values; its key (for resuming) is that of the axes' values alone.
    """
    stored = dict(cfg)
    try:
        workload = SweepAxes.workload(cfg)
        stored["workload"] = workload.to_dict()
        run = profile_fn(workload, SweepAxes.options(cfg))
    except LayertimeError as e:
        rid = store.add(
            "profile",
            model=cfg["model"],
            config=stored,
            key=config_key(cfg),
            status="failed",
            error=str(e),
            batch_size=cfg["batch_size"],
            device=cfg["device"],
            sweep_id=sweep_id,
        )
        return SweepPoint(cfg, "failed", rid, None, str(e))
    rid = store.add(
        "profile",
        model=cfg["model"],
        config=stored,
        key=config_key(cfg),
        result=run.to_dict(),
        batch_size=cfg["batch_size"],
        device=run.device,
        sweep_id=sweep_id,
    )
    return SweepPoint(cfg, "ok", rid, run)
