"""The names layertime uses: the kinds layers are grouped by (in the order reports list
them, with their labels), the roles of a transformer's layers, and the training settings
it knows (optimizers, dtypes, mixed precision).

Torch-free, so that results, renderers and the command line's flags can use them without
importing torch; which module is which kind is decided in :mod:`layertime.kinds`, which
layer has which role in :mod:`layertime.roles`.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Layer kinds, in the order reports list them.  ``linear`` is shown to
#: people as "fully connected".
KINDS: tuple[str, ...] = (
    "conv",
    "linear",
    "norm",
    "activation",
    "pool",
    "dropout",
    "embedding",
    "attention",
    "scan",
    "recurrent",
    "loss",
    "other",
)
#: Pseudo-kinds for step-level work that belongs to no layer.
STEP_KINDS: tuple[str, ...] = ("step", "unattributed")

KIND_LABELS: dict[str, str] = {
    "conv": "conv",
    "linear": "fully connected",
    "norm": "normalisation",
    "activation": "activation",
    "pool": "pool",
    "dropout": "dropout",
    "embedding": "embedding",
    "attention": "attention",
    "scan": "selective scan",
    "recurrent": "recurrent",
    "loss": "loss",
    "other": "other",
    "step": "step (data, zero_grad, clip, scheduler, logging)",
    "unattributed": "unattributed",
}


#: Roles of a transformer's layers (``layertime.roles`` places each row), in report order:
#: the sequence mixers (attention; state-space and other scans, ``mixing``), the
#: feed-forward layers (a dense MLP; a mixture of experts' ``experts``, shared experts
#: included, and its ``router``), then the rest.
ROLES: tuple[str, ...] = (
    "attention", "mixing", "mlp", "experts", "router", "embedding", "norm", "head", "other",
)
ROLE_LABELS: dict[str, str] = {
    "attention": "attention",
    "mixing": "sequence mixing",
    "mlp": "MLP",
    "experts": "MoE experts",
    "router": "MoE router",
    "embedding": "embeddings",
    "norm": "norms",
    "head": "head",
    "other": "other",
}

#: The optimizers, parameter dtypes and mixed-precision modes a workload can use.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
DTYPE_NAMES: tuple[str, ...] = ("float32", "float64", "bfloat16")
AMP_NAMES: tuple[str, ...] = ("bf16", "fp16")


def kind_label(kind: str) -> str:
    """What people read for a kind ("fully connected" for ``linear``)."""
    return KIND_LABELS.get(kind, kind)


def kind_order(kinds: Iterable[str]) -> list[str]:
    """``kinds`` in report order: the known kinds first, then any other in its own order."""
    given = list(dict.fromkeys(kinds))
    known = [k for k in KINDS + STEP_KINDS if k in given]
    return known + [k for k in given if k not in known]
