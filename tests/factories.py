"""Hand-made results for tests: one factory each, consistent by construction.

``run(layers, loss_s=...)`` makes a :class:`Run` whose phases are the sums of
its rows plus the step-level times given, and whose profiled step is their
total (unless ``profiled`` says otherwise), so every derived number of a
real run holds.  Any field of the result can be overridden by keyword.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from layertime.results.environment import Environment
from layertime.results.run import LayerRow, Phases, Run

#: A row as (name, kind, forward_s, backward_s, update_s, params), or a ready LayerRow.
RowSpec = LayerRow | tuple[Any, ...]


def environment(**overrides: Any) -> Environment:
    """A test machine: a CPU named "Test CPU" on host "host", one thread."""
    fields: dict[str, Any] = dict(device="cpu", device_name="Test CPU", torch="2.x",
                                  torchvision=None, python="3.11", platform="linux",
                                  host="host", threads=1)
    fields.update(overrides)
    return Environment(**fields)


def layer(name: str, kind: str, forward_s: float, backward_s: float = 0.0,
          update_s: float = 0.0, params: int = 0, calls: float = 1.0, *,
          type: str | None = None, **extra: Any) -> LayerRow:
    """One row; its type defaults to the kind's name in title case."""
    return LayerRow(name, kind, type if type is not None else kind.title(), forward_s,
                    backward_s, update_s, params, calls, **extra)


def run(
    layers: Sequence[RowSpec],
    *,
    loss_s: float = 0.0,
    zero_grad_s: float = 0.0,
    data_s: float = 0.0,
    unattributed_s: float = 0.0,
    comm_exposed_s: float = 0.0,
    clip_s: float = 0.0,
    scheduler_s: float = 0.0,
    logging_s: float = 0.0,
    compiled_wrapper_s: float = 0.0,
    update_step_s: float = 0.0,
    profiled: Sequence[float] | Callable[[float], Sequence[float]] | None = None,
    plain: Sequence[float] | None = None,
    **fields: Any,
) -> Run:
    """A consistent run of ``layers``: its phases add up from the rows and the step-level
    times; ``profiled`` (samples, or a function of the total) defaults to the total once,
    ``plain`` to the profiled samples."""
    rows = tuple(r if isinstance(r, LayerRow) else layer(*r) for r in layers)
    phases = Phases(
        forward_s=sum(r.forward_s for r in rows),
        backward_s=sum(r.backward_s for r in rows),
        update_s=sum(r.update_s for r in rows),
        loss_s=loss_s,
        zero_grad_s=zero_grad_s,
        data_s=data_s,
        unattributed_s=unattributed_s,
        comm_exposed_s=comm_exposed_s,
        clip_s=clip_s,
        scheduler_s=scheduler_s,
        logging_s=logging_s,
        compiled_wrapper_s=compiled_wrapper_s,
        update_step_s=update_step_s,
    )
    total = phases.total_s
    samples = tuple(profiled(total) if callable(profiled) else profiled or (total,))
    base: dict[str, Any] = dict(
        model="testnet",
        device="cpu",
        batch_size=4,
        input_shape=(3, 8, 8),
        dtype="float32",
        optimizer="sgd",
        steps=len(samples),
        warmup_steps=1,
        step_samples_s=tuple(plain) if plain is not None else samples,
        profiled_step_samples_s=samples,
        layers=rows,
        phases=phases,
        environment=environment(),
        timing="cpu-self-time",
        num_classes=10,
    )
    base.update(fields)
    return Run(**base)


#: A two-block transformer's rows as (name, kind, type, forward ms, backward ms, update ms,
#: params, role, block): GPT-2's layout (a tied head: no parameters of its own).
TRANSFORMER_ROWS: tuple[tuple[Any, ...], ...] = (
    ("", "other", "GPT2LMHeadModel", 0.2, 0.0, 0.0, 0, "other", None),
    ("transformer.wte", "embedding", "Embedding", 1.0, 4.0, 3.0, 6_400, "embedding", None),
    ("transformer.wpe", "embedding", "Embedding", 0.5, 0.5, 0.5, 1_024, "embedding", None),
    *(row for i, scale in ((0, 1.0), (1, 2.0)) for row in (
        (f"transformer.h.{i}", "other", "GPT2Block", 0.5 * scale, 0.0, 0.0, 0, "other",
         f"transformer.h.{i}"),
        (f"transformer.h.{i}.ln_1", "norm", "LayerNorm", 0.25, 0.25, 0.0, 128, "norm",
         f"transformer.h.{i}"),
        (f"transformer.h.{i}.attn", "attention", "GPT2Attention", 3.0 * scale, 3.0 * scale,
         0.0, 0, "attention", f"transformer.h.{i}"),
        (f"transformer.h.{i}.attn.c_attn", "linear", "Conv1D", 2.0, 4.0, 1.0, 12_480,
         "attention", f"transformer.h.{i}"),
        (f"transformer.h.{i}.mlp.c_fc", "linear", "Conv1D", 3.0, 6.0, 2.0, 16_640, "mlp",
         f"transformer.h.{i}"),
        (f"transformer.h.{i}.mlp.act", "activation", "NewGELUActivation", 1.0, 1.0, 0.0, 0,
         "mlp", f"transformer.h.{i}"),
    )),
    ("transformer.ln_f", "norm", "LayerNorm", 0.25, 0.25, 0.0, 128, "norm", None),
    ("lm_head", "linear", "Linear", 5.0, 10.0, 0.0, 0, "head", None),
)


def transformer_run(**fields: Any) -> Run:
    """A hand-made run of a two-block GPT-2-like transformer (rows with roles and blocks),
    seq 16; its second block takes twice the first's attention core and container time."""
    rows = [layer(n, k, f * 1e-3, b * 1e-3, u * 1e-3, p, type=t, role=role, block=block)
            for n, k, t, f, b, u, p, role, block in TRANSFORMER_ROWS]
    base: dict[str, Any] = dict(loss_s=2e-3, zero_grad_s=1e-3, model="hf:gpt2", batch_size=2,
                                input_shape=(16,), seq_len=16, num_classes=128,
                                notes=("lm_head shares 6,400 parameters with transformer.wte "
                                       "(tied weights): counted once",))
    base.update(fields)
    return run(rows, **base)


#: (name, kind, type, forward ms, backward ms, update ms, params, role, block) of one
#: OLMoE-like block: attention, then a mixture of experts (router, fused experts, a shared
#: expert) -- 100 ms of layers in all.
MOE_ROWS: tuple[tuple[Any, ...], ...] = (
    ("model.embed_tokens", "embedding", "Embedding", 1.0, 1.0, 0.0, 1000, "embedding", None),
    ("model.layers.0", "other", "OlmoeDecoderLayer", 1.0, 0.0, 0.0, 0, "other",
     "model.layers.0"),
    ("model.layers.0.self_attn", "attention", "OlmoeAttention", 6.0, 6.0, 0.0, 0,
     "attention", "model.layers.0"),
    ("model.layers.0.self_attn.q_proj", "linear", "Linear", 4.0, 4.0, 0.0, 1000,
     "attention", "model.layers.0"),
    ("model.layers.0.mlp", "other", "OlmoeSparseMoeBlock", 2.0, 2.0, 0.0, 0, "experts",
     "model.layers.0"),
    ("model.layers.0.mlp.gate", "linear", "OlmoeTopKRouter", 3.0, 4.0, 0.0, 500, "router",
     "model.layers.0"),
    ("model.layers.0.mlp.experts", "linear", "OlmoeExperts", 20.0, 30.0, 0.0, 6000, "experts",
     "model.layers.0"),
    ("model.layers.0.mlp.shared_expert", "linear", "Qwen2MoeMLP", 4.0, 4.0, 0.0, 1000,
     "experts", "model.layers.0"),
    ("model.layers.0.input_layernorm", "norm", "RMSNorm", 1.0, 1.0, 0.0, 500, "norm",
     "model.layers.0"),
    ("lm_head", "linear", "Linear", 3.0, 3.0, 0.0, 0, "head", None),
)


#: The same for a Mamba-like block: a mixer of projections, a depthwise conv and a scan.
MAMBA_ROWS: tuple[tuple[Any, ...], ...] = (
    ("backbone.embeddings", "embedding", "Embedding", 1.0, 1.0, 0.0, 1000, "embedding", None),
    ("backbone.layers.0", "other", "MambaBlock", 2.0, 0.0, 0.0, 0, "other",
     "backbone.layers.0"),
    ("backbone.layers.0.mixer", "scan", "MambaMixer", 30.0, 30.0, 0.0, 200, "mixing",
     "backbone.layers.0"),
    ("backbone.layers.0.mixer.in_proj", "linear", "Linear", 5.0, 5.0, 0.0, 4000, "mixing",
     "backbone.layers.0"),
    ("backbone.layers.0.mixer.conv1d", "conv", "Conv1d", 3.0, 3.0, 0.0, 300, "mixing",
     "backbone.layers.0"),
    ("backbone.layers.0.norm", "norm", "MambaRMSNorm", 1.0, 1.0, 0.0, 500, "norm",
     "backbone.layers.0"),
    ("lm_head", "linear", "Linear", 9.0, 9.0, 0.0, 0, "head", None),
)


def rows_run(rows: tuple[tuple[Any, ...], ...], model: str, **fields: Any) -> Run:
    """A hand-made run of ``rows`` (in milliseconds), seq 16, with no step-level time."""
    made = [layer(n, k, f * 1e-3, b * 1e-3, u * 1e-3, p, type=t, role=role, block=block)
            for n, k, t, f, b, u, p, role, block in rows]
    base: dict[str, Any] = dict(model=model, batch_size=2, input_shape=(16,), seq_len=16,
                                num_classes=128)
    base.update(fields)
    return run(made, **base)
