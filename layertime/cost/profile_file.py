"""Device profiles written as TOML (``[devices.NAME]`` tables) into the user's
profile file or any other, replacing a profile of the same name and keeping
every other line; read back by :func:`layertime.cost.devices.parse_profiles`.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from layertime.cost.devices import PRECISIONS, DeviceProfile, parse_profiles, user_profiles_path
from layertime.errors import LayertimeError
from layertime.files import write_text_atomic
from layertime.results.cost.calibration import EfficiencyFit
from layertime.results.cost.shape_grid import ShapeGrid

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _num(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"cannot write {v} to a profile")
    return repr(float(v))


def _value(v: Any) -> str:
    """A JSON-like value as TOML: dicts as inline tables, lists as arrays (None: not allowed)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _num(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()
                               if x is not None) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise ValueError(f"cannot write {v!r} to a profile")


def grid_toml(key: str, grid: ShapeGrid) -> list[str]:
    """The ``[devices.KEY.grid]`` table: the grid's JSON fields, one point per line; the
    memory-bound points in a ``[devices.KEY.grid.memory]`` sub-table after it."""
    d = grid.to_dict()
    memory = d.pop("memory")
    lines = ["", f"[devices.{key}.grid]"]
    points = {k: v for k, v in d.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    lines += [f"{_key(k)} = {_value(v)}" for k, v in d.items()
              if k not in points and v is not None]
    for k, pts in points.items():
        lines += [f"{_key(k)} = ["] + [f"  {_value(x)}," for x in pts] + ["]"]
    lines += ["", f"[devices.{key}.grid.memory]"]
    for op, pts in memory.items():
        lines += [f"{_key(op)} = ["] + [f"  {_value(x)}," for x in pts] + ["]"]
    return lines


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
    if profile.kernel_latency_s:
        lines.append(f"kernel_latency_us = {_num(profile.kernel_latency_s * 1e6)}")
    if profile.kernels != "cuda":
        lines.append(f"kernels = {json.dumps(profile.kernels)}")
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
    if profile.grid is not None:
        lines += grid_toml(key, profile.grid)
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
