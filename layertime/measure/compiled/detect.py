"""What the user compiled, read from the modules themselves: a whole model compiled
(``torch.compile(model)``, ``model.compile()``), compiled parts inside a model, and the
backend, mode and CUDA graphs a ``torch.compile`` wrapper was made with.

Module hooks added to modules inside compiled code do not run there (or recompile it), so
the collectors ask here before installing any (``loop.py``, ``runner.py``, the callbacks)
and either attribute through the compiled path or refuse with one line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from layertime.results.compiled import COMPILE_MODES

#: Inductor's option that turns CUDA graphs on (set by modes such as reduce-overhead).
CUDAGRAPHS = "triton.cudagraphs"


def compiled_inner(model: nn.Module) -> nn.Module | None:
    """The original module inside ``torch.compile(module)``, or None if ``model`` is not one."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else None


def compiled_in_place(model: nn.Module) -> bool:
    """True for a module compiled with ``module.compile()`` (its own call is compiled)."""
    return getattr(model, "_compiled_call_impl", None) is not None


def compiled_parts(model: nn.Module) -> list[str]:
    """Dotted names of the modules below ``model`` (not ``model`` itself) that are compiled:
    a ``torch.compile(module)`` wrapper set as a submodule, or a module compiled in place
    with ``module.compile()``.  Parts inside a compiled part are not listed again."""
    out: list[str] = []
    for name, m in model.named_modules():
        if not name or any(name.startswith(p + ".") for p in out):
            continue
        if compiled_inner(m) is not None or compiled_in_place(m):
            out.append(name)
    return out


def describe_parts(parts: list[str], limit: int = 3) -> str:
    """``'net'``, ``'a', 'b' and 2 more``: compiled parts named in one line."""
    shown = ", ".join(repr(p) for p in parts[:limit])
    return shown + (f" and {len(parts) - limit} more" if len(parts) > limit else "")


def _backends(wrapper: nn.Module) -> Iterator[Any]:
    """The backend objects of a ``torch.compile`` wrapper, outermost first (Dynamo wraps the
    user's backend in its own callables, each pointing at the next)."""
    obj: Any = getattr(getattr(wrapper, "dynamo_ctx", None), "callback", None)
    for _ in range(8):
        if obj is None:
            return
        yield obj
        nxt = getattr(obj, "_torchdynamo_orig_backend", None)
        if nxt is None or nxt is obj:
            return
        obj = nxt


def backend_name(wrapper: nn.Module) -> str:
    """The backend a user's ``torch.compile`` used, read from Dynamo's wrapper (``inductor``
    when it cannot be read: then a missing provenance is reported as such)."""
    for obj in _backends(wrapper):
        name = getattr(obj, "compiler_name", None)
        if isinstance(name, str) and name:
            return "inductor" if "inductor" in name else name
        if getattr(obj, "_torchdynamo_orig_backend", None) in (None, obj):
            fn = getattr(obj, "__name__", None)
            if isinstance(fn, str) and fn and not fn.startswith("<"):
                return "inductor" if "inductor" in fn else fn
    return "inductor"


def inductor_options(wrapper: nn.Module) -> Mapping[str, Any] | None:
    """The Inductor options a user's ``torch.compile`` wrapper carries (its mode's options
    and any ``options=``), or None when it is not Inductor's or they cannot be read."""
    for obj in _backends(wrapper):
        config = getattr(obj, "config", None)
        if getattr(obj, "compiler_name", None) == "inductor" and isinstance(config, dict):
            return config
    return None


def mode_options(mode: str | None) -> dict[str, Any]:
    """The Inductor options a ``torch.compile`` mode sets (none for the default)."""
    if mode in (None, "default"):
        return {}
    from torch._inductor import list_mode_options

    return dict(list_mode_options(mode))


def user_mode(wrapper: nn.Module) -> str | None:
    """The ``torch.compile`` mode a user's wrapper was made with (None: the default, or
    unknown), told by the options each mode sets: the mode whose options the wrapper
    holds, the one setting the most when several do."""
    options = inductor_options(wrapper)
    if not options:
        return None
    best: tuple[int, str | None] = (0, None)
    for mode in COMPILE_MODES:
        wanted = mode_options(mode)
        if wanted and all(options.get(k) == v for k, v in wanted.items()):
            best = max(best, (len(wanted), mode), key=lambda t: t[0])
    return best[1]


def uses_cuda_graphs(mode: str | None, options: Mapping[str, Any] | None = None) -> bool:
    """Whether Inductor records CUDA graphs for a model compiled with ``mode`` and
    ``options`` (reduce-overhead and max-autotune do; an option or Inductor's own config
    can turn them on or off)."""
    merged = {**mode_options(mode), **(options or {})}
    if CUDAGRAPHS in merged:
        return bool(merged[CUDAGRAPHS])
    import torch._inductor.config as ic

    return bool(getattr(getattr(ic, "triton", None), "cudagraphs", False))
