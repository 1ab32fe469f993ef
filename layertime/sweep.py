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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from layertime.errors import LayertimeError
from layertime.result import Run
from layertime.store import Store, config_key

#: on_progress(done, total, label, eta_s): eta_s is None until one run is timed.
SweepProgress = Callable[[int, int, str, "float | None"], None]
ProfileFn = Callable[..., Run]


def parse_axis(text: str, name: str, *, kind: type = int) -> tuple[Any, ...]:
    """Parse a comma-separated axis such as ``1,8,32``; errors are one line."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise LayertimeError(f"--{name}: empty value in {text!r}")
    out: list[Any] = []
    for p in parts:
        if kind is int:
            try:
                v = int(p)
            except ValueError:
                raise LayertimeError(f"--{name}: {p!r} is not a whole number") from None
            if v < 1:
                raise LayertimeError(f"--{name}: {v} must be at least 1")
            out.append(v)
        else:
            out.append(p)
    if len(set(out)) != len(out):
        raise LayertimeError(f"--{name}: repeated value in {text!r}")
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
    #: Token models (hf:, issue 11): sequence lengths, and --config overrides.
    seq_lens: tuple[int | None, ...] = (None,)
    hf_config: tuple[str, ...] = ()

    def configs(self) -> list[dict[str, Any]]:
        """One dict per configuration, in a stable order (batch size varies fastest,
        then sequence length).  ``seq_len`` and ``config`` appear only when given,
        so image sweeps keep the keys (and the stored configurations) they had."""
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
            if self.hf_config:
                cfg["config"] = list(self.hf_config)
            out.append(cfg)
        return out


@dataclass(frozen=True)
class SweepPoint:
    """One configuration's outcome."""

    config: dict[str, Any]
    status: str  # "ok", "failed" or "skipped" (already stored)
    run_id: int | None
    run: Run | None
    error: str | None = None


@dataclass(frozen=True)
class Crossover:
    """The batch size below which fully connected layers take more time than conv layers."""

    group: dict[str, Any]
    batch_size: float
    below: int
    above: int
    interpolated: bool = True

    def describe(self) -> str:
        label = ", ".join(f"{k} {v}" for k, v in self.group.items() if v is not None)
        return (
            f"crossover at batch ~{self.batch_size:.1f} (interpolated between {self.below} "
            f"and {self.above}; {label}): below it fully connected layers take more time "
            "than conv layers"
        )


@dataclass(frozen=True)
class SeqCrossover:
    """The sequence length above which attention takes more time than the MLP."""

    group: dict[str, Any]
    seq_len: float
    below: int
    above: int
    interpolated: bool = True

    def describe(self) -> str:
        label = ", ".join(f"{k} {v}" for k, v in self.group.items() if v is not None)
        return (
            f"attention overtakes the MLP at seq ~{self.seq_len:.0f} (interpolated between "
            f"{self.below} and {self.above}; {label}): above it attention layers take more "
            "time than MLP layers"
        )


@dataclass(frozen=True)
class SweepResult:
    sweep_id: int | None
    points: tuple[SweepPoint, ...]
    crossovers: tuple[Crossover, ...] = field(default_factory=tuple)
    seq_crossovers: tuple[SeqCrossover, ...] = field(default_factory=tuple)

    def summary(self) -> dict[str, Any]:
        """What the sweep's own stored row holds."""
        return {
            "schema": "layertime.sweep/1",
            "points": [
                {
                    "config": p.config,
                    "status": p.status,
                    "run_id": p.run_id,
                    "error": p.error,
                    "step_s": p.run.step_s if p.run else None,
                    "kinds": (
                        {k: v.share for k, v in p.run.by_kind().items()} if p.run else None
                    ),
                    **(
                        {"roles": {k: v.share for k, v in p.run.roles().items()}
                         if p.run else None}
                        if p.config.get("seq_len") is not None
                        else {}
                    ),
                }
                for p in self.points
            ],
            "crossovers": [
                {"group": c.group, "batch_size": c.batch_size, "below": c.below, "above": c.above}
                for c in self.crossovers
            ],
            **(
                {
                    "seq_crossovers": [
                        {"group": c.group, "seq_len": c.seq_len, "below": c.below,
                         "above": c.above}
                        for c in self.seq_crossovers
                    ]
                }
                if any(p.config.get("seq_len") is not None for p in self.points)
                else {}
            ),
        }


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
        series.sort()
        for (b1, d1), (b2, d2) in zip(series, series[1:]):
            if d1 > 0 >= d2 or d1 < 0 <= d2:
                x1, x2 = math.log2(b1), math.log2(b2)
                x = x1 + (0 - d1) * (x2 - x1) / (d2 - d1)
                out.append(Crossover(labels[key], 2**x, b1, b2))
                break
    return out


def _role_share(run: Run, role: str) -> float:
    r = run.roles().get(role)
    return r.share if r else 0.0


def log_crossing(series: Sequence[tuple[int, float]]) -> tuple[float, int, int] | None:
    """Where ``d`` changes sign along ``x`` (sorted pairs ``(x, d)``): interpolated
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
        found = log_crossing(sorted(series))
        if found is not None:
            out.append(SeqCrossover(labels[key], *found))
    return out


def run_sweep(
    axes: SweepAxes,
    store: Store,
    *,
    force: bool = False,
    profile_fn: ProfileFn | None = None,
    on_progress: SweepProgress | None = None,
) -> SweepResult:
    """Profile every configuration of ``axes``, storing each as it finishes.

    ``profile_fn`` defaults to :func:`layertime.profile` (tests inject one).
    A ``KeyboardInterrupt`` marks the sweep ``interrupted`` and propagates;
    the configurations finished before it stay stored.
    """
    if profile_fn is None:
        from layertime.measure.runner import profile

        profile_fn = profile
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
            key = config_key(cfg)
            done = None if force else store.find_ok(key)
            if done is not None and done.result is not None:
                points.append(SweepPoint(cfg, "skipped", done.id, Run.from_dict(done.result)))
                continue
            t0 = time.perf_counter()
            try:
                tokens: dict[str, Any] = {}
                if cfg.get("seq_len") is not None:
                    tokens["seq_len"] = cfg["seq_len"]
                if cfg.get("config"):
                    tokens["hf_config"] = tuple(cfg["config"])
                run = profile_fn(
                    cfg["model"],
                    batch_size=cfg["batch_size"],
                    image_size=cfg["image_size"],
                    device=cfg["device"],
                    dtype=cfg["dtype"],
                    optimizer=cfg["optimizer"],
                    steps=cfg["steps"],
                    warmup_steps=cfg["warmup_steps"],
                    **tokens,
                )
            except LayertimeError as e:
                rid = store.add(
                    "profile",
                    model=cfg["model"],
                    config=cfg,
                    status="failed",
                    error=str(e),
                    batch_size=cfg["batch_size"],
                    device=cfg["device"],
                    sweep_id=sweep_id,
                )
                points.append(SweepPoint(cfg, "failed", rid, None, str(e)))
                continue
            durations.append(time.perf_counter() - t0)
            rid = store.add(
                "profile",
                model=cfg["model"],
                config=cfg,
                result=run.to_dict(),
                batch_size=cfg["batch_size"],
                device=run.device,
                sweep_id=sweep_id,
            )
            points.append(SweepPoint(cfg, "ok", rid, run))
        progress(len(configs), len(configs), "done", 0.0)
    except BaseException as e:
        partial = SweepResult(sweep_id, tuple(points), tuple(crossovers(points)),
                              tuple(seq_crossovers(points)))
        store.update(
            sweep_id,
            status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
            result=partial.summary(),
            error=f"{type(e).__name__}: {e}"[:500],
        )
        raise
    result = SweepResult(sweep_id, tuple(points), tuple(crossovers(points)),
                         tuple(seq_crossovers(points)))
    store.update(sweep_id, status="ok", result=result.summary())
    return result
