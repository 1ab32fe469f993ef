"""Measure this machine and save it as a device profile (``layertime calibrate``).

Two measurements, each the best of a few timed repeats after one untimed run
(best, not median: a peak is what the device can reach, as STREAM reports
its best time), each synchronised on CUDA:

* **matmul FLOP/s** per precision: ``n x n @ n x n`` is ``2 n^3`` FLOPs.  On the
  CPU float32, float64 and bfloat16 (where torch runs it); on CUDA also TF32
  (float32 with ``torch.backends.cuda.matmul.allow_tf32``) and float16.
* **memory bandwidth**: a large copy (reads and writes each byte: 2 x size)
  and a large add (``c = a + b``: 3 x size), each buffer far beyond the
  caches; the profile takes the faster of the two.

:func:`to_profile` turns a :class:`Calibration` into a
:class:`~layertime.cost.devices.DeviceProfile`, optionally with efficiencies
fitted to a measured run (:mod:`layertime.cost.fit`); :func:`save_profile`
writes it as TOML into the user's profile file (or any file), replacing a
profile of the same name and keeping every other line.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import socket
import time
import tomllib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layertime.cost.devices import DeviceProfile, PRECISIONS, parse_profiles, user_profiles_path
from layertime.cost.fit import DEFAULT_MIN_SHARE, EfficiencyFit, fit_efficiency
from layertime.cost.roofline import MathMode
from layertime.environment import describe, matmul_tf32_set
from layertime.errors import LayertimeError
from layertime.result import Run, write_text_atomic

#: Matmul side and bytes per buffer of the bandwidth test, by device type.
DEFAULT_MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}
DEFAULT_MEMORY_MB = {"cpu": 256, "cuda": 1024}
DEFAULT_REPEATS = 5
#: A measurement stops repeating after this long (it keeps at least two samples).
_BUDGET_S = 3.0
#: Matmul sides double from this one; a side is tried while one product of it
#: takes at most _MAX_RUN_S at the rate measured so far.
_FIRST_SIZE = 256
_MAX_RUN_S = 0.5
#: Bandwidth operations per timed run on CUDA (see measure_bandwidth_gb_per_s).
_CUDA_BACK_TO_BACK = 10

_TORCH_DTYPES = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp64": torch.float64,
}


@dataclass(frozen=True)
class Calibration:
    """What ``layertime calibrate`` measured on one device."""

    device: str
    device_name: str
    host: str
    threads: int
    torch: str
    #: Best measured matmul rate per precision (fp32, tf32, bf16, fp16, fp64), TFLOP/s.
    matmul_tflops: Mapping[str, float]
    #: The matmul side each precision was measured at.
    matmul_sizes: Mapping[str, int]
    #: Best copy and add rates, GB/s (10^9 bytes); the profile takes the larger.
    copy_gb_per_s: float
    add_gb_per_s: float
    memory_bytes: int
    repeats: int
    created: str
    #: Device memory in GB (RAM on the CPU), when known.
    memory_gb: float | None = None
    #: Precisions not measured, with the reason.
    skipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def memory_bandwidth_gb_per_s(self) -> float:
        return max(self.copy_gb_per_s, self.add_gb_per_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "device_name": self.device_name,
            "host": self.host,
            "threads": self.threads,
            "torch": self.torch,
            "matmul_tflops": dict(self.matmul_tflops),
            "copy_gb_per_s": self.copy_gb_per_s,
            "add_gb_per_s": self.add_gb_per_s,
            "memory_bandwidth_gb_per_s": self.memory_bandwidth_gb_per_s,
            "matmul_sizes": dict(self.matmul_sizes),
            "memory_bytes": self.memory_bytes,
            "repeats": self.repeats,
            "created": self.created,
            "memory_gb": self.memory_gb,
            "skipped": dict(self.skipped),
        }


def _best_s(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``fn`` over up to ``repeats`` timed runs, after one untimed run."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    best = math.inf
    start = time.perf_counter()
    for i in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
        if i >= 1 and time.perf_counter() - start > _BUDGET_S:
            break
    return best


def _precisions(device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The precisions to measure on ``device``, and those skipped with why."""
    if device.type != "cuda":
        return ["fp32", "bf16", "fp64"], {}
    skipped: dict[str, str] = {}
    todo = ["fp32", "tf32"]
    if torch.cuda.is_bf16_supported():
        todo.append("bf16")
    else:
        skipped["bf16"] = "torch.cuda.is_bf16_supported() is False"
    todo += ["fp16", "fp64"]
    return todo, skipped


def _matmul_s(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    # Made on the device itself: an 8192² matrix built on the host and copied
    # over would spend the device's time on the host's random numbers.
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=gen, device=device).to(dtype)
    b = torch.randn(size, size, generator=gen, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    return _best_s(lambda: torch.mm(a, b, out=out), device, repeats)


def measure_matmul_tflops(
    device: torch.device, precision: str, size: int, repeats: int = DEFAULT_REPEATS
) -> tuple[float, int]:
    """Best square matmul rate at ``precision`` on ``device``: (TFLOP/s, the side that gave it).

    Sides double from :data:`_FIRST_SIZE` up to ``size`` (small products do not
    reach the peak), each timed as best of ``repeats``; the next side is
    skipped when one product of it would take more than :data:`_MAX_RUN_S` at
    the rate seen so far (a precision the device only emulates, such as
    bfloat16 on a CPU without bf16 instructions).
    """
    dtype = _TORCH_DTYPES[precision]
    best_rate, best_size = 0.0, 0
    tf32: AbstractContextManager[None] = (
        matmul_tf32_set(precision == "tf32") if device.type == "cuda" else nullcontext()
    )
    with tf32:
        side = min(size, _FIRST_SIZE)
        while True:
            rate = 2.0 * side**3 / _matmul_s(device, dtype, side, repeats)
            if rate > best_rate:
                best_rate, best_size = rate, side
            nxt = min(2 * side, size)
            if nxt == side or 2.0 * nxt**3 / rate > _MAX_RUN_S:
                break
            side = nxt
    return best_rate / 1e12, best_size


def measure_bandwidth_gb_per_s(
    device: torch.device, nbytes: int, repeats: int = DEFAULT_REPEATS
) -> tuple[float, float]:
    """Best (copy, add) rates over float32 buffers of ``nbytes`` each, GB/s.

    A copy reads and writes each element (2 x ``nbytes``); ``c = a + b`` reads
    two and writes one (3 x ``nbytes``).  On CUDA each timed run is
    :data:`_CUDA_BACK_TO_BACK` operations between two synchronisations: one
    operation on a fast device takes well under a millisecond, and the host's
    synchronisation and launch would be counted as memory time.
    """
    n = max(1, nbytes // 4)
    a = torch.ones(n, device=device)
    b = torch.ones(n, device=device)
    c = torch.empty(n, device=device)
    moved = 4 * n
    k = _CUDA_BACK_TO_BACK if device.type == "cuda" else 1

    def copies() -> None:
        for _ in range(k):
            c.copy_(a)

    def adds() -> None:
        for _ in range(k):
            torch.add(a, b, out=c)

    copy_s = _best_s(copies, device, repeats) / k
    add_s = _best_s(adds, device, repeats) / k
    return 2 * moved / copy_s / 1e9, 3 * moved / add_s / 1e9


def _memory_gb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 1e9
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return None


def calibrate(
    device: torch.device,
    *,
    matmul_size: int | None = None,
    memory_mb: float | None = None,
    repeats: int = DEFAULT_REPEATS,
    on_progress: Callable[[str], None] | None = None,
) -> Calibration:
    """Measure matmul FLOP/s per precision and memory bandwidth on ``device``."""
    if repeats < 1:
        raise LayertimeError(f"repeats must be at least 1, not {repeats}")
    kind = "cuda" if device.type == "cuda" else "cpu"
    size = matmul_size or DEFAULT_MATMUL_SIZE[kind]
    nbytes = int((memory_mb if memory_mb is not None else DEFAULT_MEMORY_MB[kind]) * 2**20)
    if size < 1 or nbytes < 4:
        raise LayertimeError("the matmul size and the memory buffer must be positive")
    progress = on_progress or (lambda what: None)
    todo, skipped = _precisions(device)
    rates: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for prec in todo:
        progress(f"matmul {prec}")
        try:
            rates[prec], sizes[prec] = measure_matmul_tflops(device, prec, size, repeats)
        except (RuntimeError, TypeError, NotImplementedError) as e:
            if prec == "fp32":
                raise LayertimeError(f"cannot run a float32 matmul on {device}: {e}") from e
            first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            skipped[prec] = f"not supported here ({first})"
    progress("memory bandwidth")
    copy, add = measure_bandwidth_gb_per_s(device, nbytes, repeats)
    env = describe(device)
    return Calibration(
        device=str(device),
        device_name=env.device_name,
        host=socket.gethostname(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        matmul_tflops={p: rates[p] for p in PRECISIONS if p in rates},
        copy_gb_per_s=copy,
        add_gb_per_s=add,
        matmul_sizes={p: sizes[p] for p in PRECISIONS if p in sizes},
        memory_bytes=4 * max(1, nbytes // 4),
        repeats=repeats,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        memory_gb=_memory_gb(device),
        skipped=skipped,
    )


def default_name(device: torch.device) -> str:
    """``local-cpu``, or ``local-<gpu name>`` in lower case with dashes."""
    if device.type != "cuda":
        return "local-cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return f"local-{slug or 'gpu'}"


def _source(cal: Calibration) -> str:
    mib = cal.memory_bytes / 2**20
    sides = ", ".join(f"{p} {n}" for p, n in cal.matmul_sizes.items())
    return (
        f"measured by layertime calibrate on {cal.host} ({cal.device}, {cal.threads} threads, "
        f"torch {cal.torch}) {cal.created}: best of up to {cal.repeats} square matmuls (side "
        f"{sides}); copy {cal.copy_gb_per_s:.3g} GB/s and add {cal.add_gb_per_s:.3g} GB/s "
        f"over {mib:g} MiB buffers"
    )


def to_profile(cal: Calibration, name: str, fit: EfficiencyFit | None = None) -> DeviceProfile:
    """The device profile of a calibration, with fitted efficiencies when given."""
    if fit is None:
        return DeviceProfile(
            key=name,
            name=cal.device_name,
            peak_tflops=dict(cal.matmul_tflops),
            memory_bandwidth_gb_per_s=cal.memory_bandwidth_gb_per_s,
            source=_source(cal),
            memory_gb=cal.memory_gb,
        )
    return DeviceProfile(
        key=name,
        name=cal.device_name,
        peak_tflops=dict(cal.matmul_tflops),
        memory_bandwidth_gb_per_s=cal.memory_bandwidth_gb_per_s,
        source=_source(cal),
        memory_gb=cal.memory_gb,
        compute_efficiency=fit.fitted("compute"),
        memory_efficiency=fit.fitted("memory"),
        efficiency_source=fit.source,
    )


# -- TOML ----------------------------------------------------------------------
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _num(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"cannot write {v} to a profile")
    return repr(float(v))


def profile_toml(profile: DeviceProfile, fit: EfficiencyFit | None = None) -> str:
    """One profile as ``[devices.NAME]`` tables; the fit's statuses become comments."""
    key = _key(profile.key)
    lines = [f"[devices.{key}]", f"name = {json.dumps(profile.name)}"]
    for prec in PRECISIONS:
        if prec in profile.peak_tflops:
            lines.append(f"{prec}_tflops = {_num(profile.peak_tflops[prec])}")
    lines.append(f"memory_bandwidth_gb_per_s = {_num(profile.memory_bandwidth_gb_per_s)}")
    if profile.memory_gb is not None:
        lines.append(f"memory_gb = {_num(profile.memory_gb)}")
    lines.append(f"source = {json.dumps(profile.source)}")
    if profile.efficiency_source is not None:
        lines.append(f"efficiency_source = {json.dumps(profile.efficiency_source)}")
    for target in ("compute", "memory"):
        table = dict(getattr(profile, f"{target}_efficiency"))
        notes = [k for k in (fit.kinds if fit else ()) if k.target == target]
        if not table and not notes:
            continue
        lines += ["", f"[devices.{key}.{target}_efficiency]"]
        for kf in notes:
            if kf.status == "default":
                lines.append(f"# {kf.kind}: default {kf.default:g} kept ({kf.reason})")
            else:
                note = f"{kf.measured_s * 1e3:.4g} ms measured, {kf.step_share:.1%} of the step"
                if kf.status == "capped":
                    note += f"; capped: {kf.reason}"
                lines.append(f"{_key(kf.kind)} = {_num(kf.efficiency)}  # {kf.status}: {note}")
        for k, v in table.items():
            if not any(kf.kind == k and kf.status != "default" for kf in notes):
                lines.append(f"{_key(k)} = {_num(v)}")
    return "\n".join(lines) + "\n"


def _without_profile(text: str, key: str) -> str:
    """``text`` less the ``[devices.KEY]`` table and its sub-tables (comments before it too)."""
    own = re.compile(r"^\s*\[\s*devices\s*\.\s*(\"?)" + re.escape(key) + r"\1\s*(\]|\.)")
    header = re.compile(r"^\s*\[")
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if header.match(line):
            skipping = bool(own.match(line))
            if skipping:
                # Comment lines right above the table belong to it (the ones we wrote).
                while out and out[-1].lstrip().startswith("#"):
                    out.pop()
        if not skipping:
            out.append(line)
    return "".join(out)


def _check_existing(text: str, path: Path) -> None:
    """Refuse to add to a file that does not parse (the error names its line)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        parse_profiles(text, str(path))  # raises "FILE:LINE: not valid TOML: ..."
        raise  # pragma: no cover
    if data.get("devices") is not None:
        parse_profiles(text, str(path))


def save_profile(profile: DeviceProfile, path: str | Path | None = None,
                 fit: EfficiencyFit | None = None, comment: str = "") -> Path:
    """Write ``profile`` into the TOML file at ``path`` (default: the user's profile file).

    A profile of the same name is replaced; other profiles, comments and
    lines are kept.  The new text is parsed back before it is written, so a
    file is never left unreadable.  Returns the path written.
    """
    p = Path(path) if path is not None else user_profiles_path()
    old = ""
    if p.exists():
        try:
            old = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise LayertimeError(f"cannot read {p}: {e}") from e
        _check_existing(old, p)
    kept = _without_profile(old, profile.key).rstrip("\n")
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    block = head + profile_toml(profile, fit)
    text = (kept + "\n\n" if kept else "") + block
    parsed = parse_profiles(text, str(p))
    if profile.key not in parsed:  # pragma: no cover (the block above defines it)
        raise LayertimeError(f"{p}: the profile {profile.key} did not read back")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LayertimeError(f"cannot create {p.parent}: {e.strerror}") from e
    write_text_atomic(p, text)
    return p


def check_profile_file(path: str | Path | None = None) -> Path:
    """Before a long calibration: the file to write (default: the user's) and that an
    existing one parses, so the measurement is not lost at the end."""
    p = Path(path) if path is not None else user_profiles_path()
    if p.is_dir():
        raise LayertimeError(f"cannot write {p}: it is a directory")
    if p.exists():
        try:
            _check_existing(p.read_text(), p)
        except (OSError, UnicodeDecodeError) as e:
            raise LayertimeError(f"cannot read {p}: {e}") from e
    return p


def fit_to_run(
    cal: Calibration,
    name: str,
    run: Run,
    *,
    model: str | None = None,
    min_share: float = DEFAULT_MIN_SHARE,
) -> tuple[DeviceProfile, EfficiencyFit, list[str]]:
    """Count the run's configuration, fit efficiencies to it on the measured peaks.

    Returns the profile with the fitted efficiencies, the fit, and warnings
    (a run measured on another host).  ``model`` is the name to count
    (default: the run's own).
    """
    from layertime.cost import estimate

    if torch.device(run.device).type != torch.device(cal.device).type:
        raise LayertimeError(
            f"the run was measured on {run.device} and the calibration on {cal.device}: "
            "fit a run of the device calibrated (--device)"
        )
    warnings = []
    if run.environment.host != cal.host:
        warnings.append(f"the run was measured on host {run.environment.host}, the peaks on "
                        f"{cal.host}")
    if run.environment.threads != cal.threads:
        warnings.append(f"the run used {run.environment.threads} threads, the calibration "
                        f"{cal.threads}")
    cost = estimate(
        model or run.model,
        batch_size=run.batch_size,
        input_shape=run.input_shape,
        num_classes=run.num_classes or 1000,
        optimizer=run.optimizer,
        dtype=run.dtype,
    )
    fit = fit_efficiency(
        run, cost, to_profile(cal, name), min_share=min_share, mode=MathMode.of_run(run.environment)
    )
    return to_profile(cal, name, fit), fit, warnings
