"""The count's rows are the measured run's rows: a module's projections computed with its
own parameters are a part of it, those with a child's parameters the child's
(``nn.MultiheadAttention``: ``F.linear`` with ``in_proj_weight`` and ``out_proj.weight``)."""

from __future__ import annotations

import torch
from torch import nn

from layertime.cost import estimate
from layertime.measure.runner import profile

B, S, E, H = 2, 6, 16, 2


class Encoder(nn.Module):
    """Token features in, a class out: one self-attention and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(E, H, batch_first=True)
        self.head = nn.Linear(E, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.attn(x, x, x, need_weights=False)
        return self.head(y.mean(1))


def test_multihead_attentions_projections_are_rows_of_their_own_in_the_count() -> None:
    cost = estimate(Encoder(), batch_size=B, input_shape=(S, E), num_classes=3)
    rows = {r.name: r for r in cost.layers}
    part, out, core = rows["attn.(in_proj)"], rows["attn.out_proj"], rows["attn"]
    assert (part.kind, out.kind, core.kind) == ("linear", "linear", "attention")
    # By hand: the packed in-projection multiplies B*S tokens by E x 3E, the output one by
    # E x E; 2 FLOPs a multiply-add, forward, input gradient and weight gradient alike.
    assert part.flops.forward == 2 * B * S * E * 3 * E
    assert out.flops.forward == 2 * B * S * E * E
    assert part.flops.backward_weight == part.flops.forward
    assert out.flops.backward_input == out.flops.forward
    # The core keeps the scores and the weighted sum (SDPA), no projection.
    assert core.flops.forward > 0 and not any(
        w.op in ("aten.addmm", "aten.mm") for w in core.ops)
    # Parameters and their update follow: in_proj_weight and in_proj_bias are the part's.
    assert part.params == 3 * E * E + 3 * E and out.params == E * E + E and core.params == 0
    assert part.flops.update > 0 and core.flops.update == 0


def test_the_counts_rows_are_the_measured_runs_rows() -> None:
    model = Encoder()
    run = profile(model, batch_size=B, input_shape=(S, E), num_classes=3, steps=1,
                  warmup_steps=1)
    cost = estimate(Encoder(), batch_size=B, input_shape=(S, E), num_classes=3)
    assert {r.name for r in run.layers} == {r.name for r in cost.layers}
    kinds = {r.name: r.kind for r in run.layers}
    assert all(kinds[r.name] == r.kind for r in cost.layers)
