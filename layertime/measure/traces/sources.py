"""Which files a ``layertime attribute`` argument names, and which rank each holds.

An argument is a trace file (``.json``, ``.json.gz``) or a folder, as
``tensorboard_trace_handler`` fills one: every ``*.pt.trace.json[.gz]`` in it (else every
``*.json[.gz]``).  A trace recorded under ``torch.distributed`` says its rank
(``distributedInfo``); the handler names files ``<worker>.<time>.pt.trace.json``, so files
of one worker (several active cycles) hold one rank's steps.  Files are grouped by that
rank, else by worker name; a single group is one process's run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layertime.errors import BadValue

_TRACE_SUFFIXES = (".json", ".json.gz")
_HANDLER_NAME = re.compile(r"^(?P<worker>.+)\.\d+\.pt\.trace\.json(\.gz)?$")


@dataclass
class RankFiles:
    """One rank's files (or one process's), with what their metadata says."""

    key: str
    files: list[Path] = field(default_factory=list)
    rank: int | None = None
    world_size: int | None = None
    backend: str | None = None
    meta: list[dict[str, Any]] = field(default_factory=list)


def trace_files(args: Sequence[str | Path]) -> list[Path]:
    """The trace files the arguments name, in a stable order; a one-line error for a path
    that is missing or a folder without traces."""
    out: list[Path] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and _HANDLER_NAME.match(f.name))
            if not found:
                found = sorted(f for f in p.iterdir()
                               if f.is_file() and f.name.endswith(_TRACE_SUFFIXES))
            if not found:
                raise BadValue(f"{p}: no trace files in this folder (expected *.pt.trace.json "
                               "or *.json[.gz], as tensorboard_trace_handler writes)")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif p.exists():
            raise BadValue(f"{p}: not a file or a folder")
        else:
            raise BadValue(f"{p}: no such file or folder")
    if not out:
        raise BadValue("give at least one trace file or folder")
    return list(dict.fromkeys(out))


def worker_of(path: Path) -> str:
    """The worker name tensorboard_trace_handler put in a file's name (else the file name)."""
    m = _HANDLER_NAME.match(path.name)
    return m.group("worker") if m else path.name


def group_ranks(files: Sequence[Path], metas: Sequence[dict[str, Any]]) -> list[RankFiles]:
    """Files grouped by rank (``distributedInfo.rank``), else by worker name; ordered by
    rank, then name.  Two files of different ranks' runs never share a group."""
    groups: dict[str, RankFiles] = {}
    for path, meta in zip(files, metas):
        info = meta.get("distributedInfo")
        rank = world = backend = None
        if isinstance(info, dict) and isinstance(info.get("rank"), int):
            rank = int(info["rank"])
            world = int(info["world_size"]) if isinstance(info.get("world_size"), int) else None
            backend = str(info["backend"]) if info.get("backend") is not None else None
        key = f"rank {rank}" if rank is not None else worker_of(path)
        g = groups.setdefault(key, RankFiles(key, rank=rank, world_size=world, backend=backend))
        g.files.append(path)
        g.meta.append(meta)
    ordered = sorted(groups.values(),
                     key=lambda g: (g.rank is None, g.rank if g.rank is not None else 0, g.key))
    return ordered
