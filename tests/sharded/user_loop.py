"""A user's own torchrun script: shard a model with FSDP2 and/or tensor parallelism,
train it in their own loop under ``layertime.Profiler``, and write what the tests check.

Run as ``torchrun --nproc-per-node N user_loop.py MODE OUT_DIR`` (MODE: fsdp-cnn,
fsdp-llama, tp-llama, 2d-llama; fsdp1-cnn wraps the model in FSDP1; lt-tp-gpt2 and lt-2d-gpt2 shard GPT-2 as ``layertime
profile --tp/--fsdp`` does, with layertime's own plan).  Each rank writes ``rank<R>.json``: its run, the loss
trajectory of the sharded model beside an unsharded copy trained on the same batches,
what CommDebugMode counted in one step outside the profiler, and the bytes FSDP's units
hold; rank 0 also writes ``merged.json`` (``Profiler.gather()``).
"""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor.debug import CommDebugMode
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import layertime
from layertime.measure.parallel.ranks import leave_process_group

STEPS = 9  # 1 warm-up, 2 memory steps, then plain/traced pairs: 3 traced steps


class Cnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(),
                                        nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                         max_position_embeddings=64, tie_word_embeddings=False)
    config._attn_implementation = "eager"
    return LlamaForCausalLM(config)


def batches(mode: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    if mode.endswith("-cnn"):
        return [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g))
                for _ in range(STEPS)]
    return [(t, t) for t in (torch.randint(0, 256, (2, 16), generator=g) for _ in range(STEPS))]


def loss_of(model: nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if mode.endswith("-cnn"):
        return F.cross_entropy(model(x), y)
    return model(input_ids=x, labels=y).loss


def shard(model: nn.Module, mode: str, world: int) -> nn.Module:
    if mode.startswith(("tp", "2d")):
        tp = world if mode.startswith("tp") else 2
        mesh = (init_device_mesh("cpu", (tp,), mesh_dim_names=("tp",)) if tp == world else
                init_device_mesh("cpu", (world // tp, tp), mesh_dim_names=("dp", "tp")))
        plan = {}
        for i in range(len(model.model.layers)):
            p = f"model.layers.{i}"
            plan.update({f"{p}.self_attn.q_proj": ColwiseParallel(),
                         f"{p}.self_attn.k_proj": ColwiseParallel(),
                         f"{p}.self_attn.v_proj": ColwiseParallel(),
                         f"{p}.self_attn.o_proj": RowwiseParallel(),
                         f"{p}.mlp.gate_proj": ColwiseParallel(),
                         f"{p}.mlp.up_proj": ColwiseParallel(),
                         f"{p}.mlp.down_proj": RowwiseParallel()})
        parallelize_module(model, mesh["tp"], plan)
        if mode.startswith("2d"):
            for layer in model.model.layers:
                fully_shard(layer, mesh=mesh["dp"])
            fully_shard(model, mesh=mesh["dp"])
        return model
    if mode == "fsdp1-cnn":
        # FSDP1, as Lightning's FSDPStrategy and accelerate wrap a model.
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        return FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy({nn.Sequential}),
                                        use_orig_params=True, device_id=torch.device("cpu"))
    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("dp",))
    units = list(model.children()) if mode == "fsdp-cnn" else list(model.model.layers)
    for u in units:
        fully_shard(u, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def layertime_shard(model: nn.Module, mode: str, world: int) -> nn.Module:
    """The layout ``layertime profile --fsdp/--tp`` applies (its own GPT-2 plan)."""
    from layertime.measure.parallel.shard import shard_model
    from layertime.workload.sharding import ShardingSpec

    spec = ShardingSpec(tp=world) if mode.startswith("lt-tp") else ShardingSpec(fsdp=True, tp=2)
    shard_model(model, spec, world, torch.device("cpu"), "gpt2")
    return model


def gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    # No dropout: the sharded and the reference model must draw no random masks.
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=64,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def padded_unit_bytes(model: nn.Module, units: dict[str, nn.Module], world: int) -> dict[str, int]:
    """Bytes FSDP2 all-gathers for each unit: its own parameters (not an inner unit's),
    each padded on dim 0 to a multiple of the ranks."""
    inner = {id(p) for name, u in units.items() if name for p in u.parameters()}
    out = {}
    for name, u in units.items():
        total = 0
        for p in u.parameters():
            if name == "" and id(p) in inner:
                continue
            dim0 = -(-p.shape[0] // world) * world
            rest = p.numel() // p.shape[0] if p.shape[0] else 0
            total += dim0 * rest * p.element_size()
        out[name] = total
    return out


def stock_check(model: nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor,
                opt: torch.optim.Optimizer) -> dict[str, float]:
    """One step traced by layertime's session; its charges beside the stock profiler's
    own events of the same step (gloo's collectives, the c10d ops)."""
    from layertime.measure.attribute import attribute_step, split_steps
    from layertime.measure.parallel.shard import detect_layout
    from layertime.measure.parallel.sharded import unit_maps
    from layertime.measure.parallel.sharded_comm import charge_collectives
    from layertime.measure.tracer import TraceSession
    from layertime.modules import ModuleTable

    table = ModuleTable(model)
    layout = detect_layout(model, dist.get_world_size())
    assert layout is not None
    session = TraceSession(table, torch.device("cpu"), record_shapes=True)
    session.start()
    session.enter_step()
    opt.zero_grad()
    loss_of(model, mode, x, y).backward()
    opt.step()
    session.exit_step()
    events = session.stop()
    ((step, members),) = split_steps(events)
    charged = charge_collectives(attribute_step(step, members), *unit_maps(table, layout.units))
    raw = [e for e in session.profiler.events()
           if step.start_us <= e.time_range.start <= step.end_us]
    gloo = sum(e.time_range.elapsed_us() for e in raw if e.name.startswith("gloo:")) * 1e-6
    return {
        "charged_busy_s": sum(c.busy_s for c in charged.collective_charges),
        "stock_gloo_s": gloo,
        "charged_calls": sum(c.count for c in charged.collective_charges),
        "stock_gloo_events": sum(1 for e in raw if e.name.startswith("gloo:")),
        "charged_s": sum(c.exposed_s + c.hidden_s for c in charged.collective_charges),
        "layers_comm_s": sum(c.comm_s for c in charged.comm.values()),
        "step_row_s": sum(c.exposed_s for c in charged.collective_charges if c.key[0] == "step"),
        "rows_s": charged.total_s(),
        "step_s": charged.step_s,
    }


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    train_and_write(mode, out, dist.get_rank(), dist.get_world_size())
    # The sharded model, held by reference cycles, is freed before the group is left, as
    # layertime's ranks do (left to the interpreter's teardown, the rank can abort).
    leave_process_group()


def train_and_write(mode: str, out: Path, rank: int, world: int) -> None:
    """Shard, train under the profiler beside an unsharded copy, write this rank's file."""
    torch.manual_seed(0)
    model = (Cnn() if mode.endswith("-cnn") else gpt2() if mode.startswith("lt-") else llama())
    reference = copy.deepcopy(model)
    unit_bytes: dict[str, int] = {}
    if mode in ("fsdp-cnn", "fsdp-llama"):
        units = (dict(model.named_children()) if mode == "fsdp-cnn" else
                 {f"model.layers.{i}": m for i, m in enumerate(model.model.layers)})
        unit_bytes = padded_unit_bytes(model, {**units, "": model}, world)
    model = layertime_shard(model, mode, world) if mode.startswith("lt-") else shard(
        model, mode, world)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    data = batches(mode)
    losses, ref_losses = [], []
    with layertime.Profiler(model, opt, warmup_steps=1) as prof:
        for x, y in data[:-1]:
            opt.zero_grad()
            loss = loss_of(model, mode, x, y)
            loss.backward()
            opt.step()
            losses.append(float(loss))
            prof.step()
    for x, y in data[:-1]:
        ref_opt.zero_grad()
        ref_loss = loss_of(reference, mode, x, y)
        ref_loss.backward()
        ref_opt.step()
        ref_losses.append(float(ref_loss))
    # One more step, outside the profiler, with torch's own count of collectives.
    x, y = data[-1]
    with CommDebugMode() as comm:
        opt.zero_grad()
        loss_of(model, mode, x, y).backward()
        opt.step()
    counts = {str(k): int(v) for k, v in comm.get_comm_counts().items()}
    stock = stock_check(model, mode, x, y, opt)
    run = prof.result()
    merged = prof.gather()
    (out / f"rank{rank}.json").write_text(json.dumps({
        "run": run.to_dict(), "losses": losses, "reference_losses": ref_losses,
        "comm_debug_counts": counts, "finite": all(math.isfinite(v) for v in losses),
        "unit_bytes": unit_bytes, "stock": stock,
    }))
    if merged is not None:
        merged.save(out / "merged.json")


if __name__ == "__main__":
    main()
