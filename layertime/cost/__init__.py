"""The cost model: what one training step costs per layer, counted without running it.

Public API::

    from layertime.cost import estimate, predict, get_profile
    cost = estimate("vgg16", batch_size=256)            # a CostResult (meta device)
    cost = predict(cost, get_profile("a100"))           # adds roofline estimates
    print(cost.headline())

Counts come from ``layertime.cost.count.counts``, device profiles from
``layertime.cost.devices``, predictions from ``layertime.cost.roofline``.
"""

from __future__ import annotations

import copy
import math
import warnings as _warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from layertime.cost.count.counts import count_step
from layertime.cost.devices import DeviceProfile, builtin_profiles, get_profile, load_profiles
from layertime.cost.count.kernel_choice import KernelTarget, target_of_name
from layertime.cost.roofline import Efficiency, MathMode, predict
from layertime.errors import BadValue, LayertimeError, first_line
from layertime.models import ModelRef, target
from layertime.results.cost.estimate import SCHEMA, CostResult
from layertime.results.cost.rows import LayerCost, PhaseCounts, PhaseTimes
from layertime.workload import DTYPES, WorkloadOptions, WorkloadSpec

if TYPE_CHECKING:
    from typing import Unpack

__all__ = [
    "SCHEMA",
    "CostResult",
    "DeviceProfile",
    "Efficiency",
    "KernelTarget",
    "LayerCost",
    "MathMode",
    "PhaseCounts",
    "PhaseTimes",
    "builtin_profiles",
    "estimate",
    "estimate_workload",
    "get_profile",
    "load_profiles",
    "predict",
    "target_of_profile",
]


def target_of_profile(profile: DeviceProfile) -> KernelTarget:
    """The device whose kernels a prediction on ``profile`` should count: an NVIDIA GPU
    (its compute capability from its name) or the CPU a calibrated profile was measured
    on."""
    return target_of_name(profile.name)

#: Factory functions that build parameters; with no device given they go to meta when large.
_FACTORIES = (
    torch.empty,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.rand,
    torch.randn,
    torch.empty_strided,
)
#: Tensors below this many elements are built for real (cheap), so that models
#: computing their shape from small tensors (RegNet's widths) still build.
_META_MIN_ELEMENTS = 4096


class _LargeTensorsOnMeta(TorchFunctionMode):
    """While building a model, makes large factory tensors on the meta device."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in _FACTORIES and kwargs.get("device") is None:
            size = args[0] if args and isinstance(args[0], (tuple, list, torch.Size)) else args
            try:
                n = math.prod(int(s) for s in size)
            except (TypeError, ValueError):
                n = 0
            if n >= _META_MIN_ELEMENTS:
                kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _meta_limitation(e: BaseException) -> bool:
    """Whether an error comes from the meta device itself (no data, no meta kernel)."""
    return isinstance(e, (NotImplementedError, TypeError)) or "meta" in str(e).lower()


def build_meta(build: Callable[[int], nn.Module], num_classes: int, dtype: str) -> nn.Module:
    """Build a model with its parameters on the meta device, allocating (almost) nothing.

    Large tensors are made on meta as the model is built; should the
    builder need real data (it reads values back), it is built on the CPU
    and moved.  The model ends with every parameter and buffer on meta.
    """
    try:
        with _LargeTensorsOnMeta():
            model = build(num_classes)
    except LayertimeError:
        raise
    except Exception:
        model = build(num_classes)
    return model.to(device="meta", dtype=DTYPES[dtype])


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with meta parameters and buffers; the original is untouched."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        stand_in = torch.empty_like(p, device="meta")
        memo[id(p)] = nn.Parameter(stand_in, requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def freeze(model: nn.Module, prefixes: Sequence[str]) -> int:
    """Make parameters under the given module paths not require grad; returns how many elements."""
    frozen = 0
    for prefix in prefixes:
        hit = False
        for name, p in model.named_parameters():
            if prefix in ("", "*") or name == prefix or name.startswith(prefix + "."):
                hit = True
                if p.requires_grad:
                    p.requires_grad_(False)
                    frozen += p.numel()
        if not hit:
            raise BadValue(f"--freeze {prefix!r} matches no parameter of the model")
    return frozen


def estimate_workload(
    workload: WorkloadSpec, *, frozen: Sequence[str] = (), training: bool = True,
    kernel_target: KernelTarget | None = None,
) -> CostResult:
    """Count one training step of ``workload`` per layer, on the meta device when it can.

    ``workload.model`` is a name :func:`layertime.models.resolve` accepts or
    an ``nn.Module`` (copied to meta, never modified); its device, amp and
    seed play no part in the counts.  ``frozen`` lists module paths whose
    parameters get no gradient.  A model that cannot run on the meta device
    is counted with real tensors on the CPU instead, and the result's
    ``warnings`` say so.  ``kernel_target``: the device whose kernels are counted (SDPA's
    backend, the optimizer's implementation, each op's traffic); default the
    workload's device.
    """
    return estimate_with_model(workload, frozen=frozen, training=training, kernel_target=kernel_target)[0]


def estimate_with_model(
    workload: WorkloadSpec, *, frozen: Sequence[str] = (), training: bool = True,
    kernel_target: KernelTarget | None = None,
) -> tuple[CostResult, nn.Module]:
    """:func:`estimate_workload`, and the model it counted (on meta, or the CPU copy), for
    what needs the model's parameters as well as its counts (the sharded what-if)."""
    tgt = target(workload.model, workload.input)
    label, model = tgt.label, workload.model
    workload = workload.with_input(tgt.input)
    dtype = DTYPES[workload.dtype]

    def on_meta() -> nn.Module:
        if not isinstance(model, nn.Module):
            return build_meta(tgt.build, workload.num_classes, workload.dtype)
        return meta_copy(model).to(dtype=dtype)

    def on_cpu() -> nn.Module:
        real = (tgt.build(workload.num_classes) if not isinstance(model, nn.Module)
                else copy.deepcopy(model))
        return real.to(device="cpu", dtype=dtype)

    where = f"on {tgt.input.describe(short=True)}"
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        try:
            net = on_meta()
        except LayertimeError:
            raise
        except Exception as e:
            raise LayertimeError(f"cannot build {label}: {first_line(e, 200)}") from e
        freeze(net, frozen)
        try:
            return (count_step(net, workload, label=label, training=training, kernel_target=kernel_target),
                    net)
        except LayertimeError:
            raise
        except Exception as e:
            if not _meta_limitation(e):
                raise LayertimeError(f"cannot run {label} {where}: {first_line(e, 200)}") from e
            note = (
                f"{label} cannot run on the meta device ({first_line(e, 200)}); "
                "counted with real tensors on the CPU instead"
            )
        try:
            real = on_cpu()
            freeze(real, frozen)
            return (count_step(real, workload, label=label, training=training,
                               warnings=(note,), kernel_target=kernel_target), real)
        except LayertimeError:
            raise
        except Exception as e:
            raise LayertimeError(f"cannot run {label} {where}: {first_line(e, 200)}") from e


def estimate(
    model: str | ModelRef | nn.Module,
    *,
    frozen: Sequence[str] = (),
    training: bool = True,
    kernel_target: KernelTarget | None = None,
    **workload: Unpack[WorkloadOptions],
) -> CostResult:
    """:func:`estimate_workload` with ``layertime.profile``'s keyword options
    (``batch_size``, ``input_shape`` or ``image_size``, ``num_classes``, ``optimizer``,
    ``dtype``, ...)."""
    return estimate_workload(
        WorkloadSpec.create(model, **workload), frozen=frozen, training=training, kernel_target=kernel_target
    )
