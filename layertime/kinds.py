"""Map a module to its kind (conv, linear, norm, ...).

Kinds are decided by module class, most specific first, so that a user's
subclass of ``nn.Conv2d`` is still a conv.  Containers and unknown modules
are ``other``.
"""

from __future__ import annotations

from torch import nn

_RULES: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("attention", (nn.MultiheadAttention,)),
    ("conv", (nn.modules.conv._ConvNd,)),
    ("linear", (nn.Linear, nn.Bilinear, nn.LazyLinear)),
    (
        "norm",
        (
            nn.modules.batchnorm._NormBase,
            nn.LayerNorm,
            nn.GroupNorm,
            nn.LocalResponseNorm,
            nn.CrossMapLRN2d,
            getattr(nn, "RMSNorm", nn.LayerNorm),
        ),
    ),
    (
        "pool",
        (
            nn.modules.pooling._MaxPoolNd,
            nn.modules.pooling._AvgPoolNd,
            nn.modules.pooling._AdaptiveAvgPoolNd,
            nn.modules.pooling._AdaptiveMaxPoolNd,
            nn.modules.pooling._LPPoolNd,
        ),
    ),
    ("dropout", (nn.modules.dropout._DropoutNd,)),
    ("embedding", (nn.Embedding, nn.EmbeddingBag)),
    ("recurrent", (nn.RNNBase, nn.modules.rnn.RNNCellBase)),
    ("loss", (nn.modules.loss._Loss,)),
)

#: Activation classes live in ``torch.nn.modules.activation`` (except attention).
_ACTIVATION_MODULE = "torch.nn.modules.activation"


def kind_of(module: nn.Module) -> str:
    """The kind of one module, by its class."""
    for kind, classes in _RULES:
        if isinstance(module, classes):
            return kind
    for cls in type(module).__mro__:
        if cls.__module__ == _ACTIVATION_MODULE and cls is not nn.Module:
            return "activation"
    name = type(module).__name__.lower()
    # timm and other libraries define their own attention and norm blocks.
    if "attention" in name or name.endswith("attn"):
        return "attention"
    if name.endswith("norm") or name.endswith("norm2d"):
        return "norm"
    return "other"
