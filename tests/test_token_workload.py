"""The token workload: batches, the loss of each head, validation, and profiles of tiny transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import layertime
from _tiny_transformers import tiny
from layertime.errors import LayertimeError
from layertime.models import ModelRef
from layertime.models.hf import resolve_hf
from layertime.results.run import Run
from layertime.workload import Batch, TokenInput, WorkloadSpec, check_input
from layertime.workload.tokens import MLM_PROBABILITY, call_of

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


CPU = torch.device("cpu")


def _model(model_type: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return resolve_hf(model_type, tiny(model_type)).build()


def _hf(model_type: str) -> ModelRef:
    return ModelRef(f"hf:{model_type}", tuple(tiny(model_type)))


def _batch(inp: TokenInput, model: torch.nn.Module, n: int, device: torch.device = CPU,
           seed: int | None = None) -> Batch:
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return inp.batch(n, model=model, device=device, dtype=torch.float32, generator=gen)


@pytest.mark.parametrize("model_type, head", [("gpt2", "causal-lm"), ("bert", "masked-lm"),
                                              ("llama", "causal-lm"), ("t5", "seq2seq-lm")])
def test_the_loss_is_the_one_transformers_computes_from_labels(model_type: str, head: str) -> None:
    model = _model(model_type).eval()
    inp = TokenInput(16).for_model(model)
    assert inp.head == head and inp.vocab_size == 128 and inp.loss_name == f"{head} loss"
    batch = _batch(inp, model, 3, seed=1)
    ids = batch.kwargs["input_ids"]
    assert ids.shape == (3, 16) and int(ids.min()) >= 0 and int(ids.max()) < 128
    with torch.no_grad():
        out = batch.run(model)
        ours = inp.loss(out, inp.targets(out.logits.shape, batch))
        theirs = model(**batch.kwargs, labels=batch.targets).loss
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_masked_lm_predicts_15_percent_of_each_sequence() -> None:
    model = _model("bert")
    batch = _batch(TokenInput(40), model, 4)
    labels = batch.targets
    assert labels is not None
    picked = (labels != -100).sum(dim=1)
    assert picked.tolist() == [round(MLM_PROBABILITY * 40)] * 4
    kept = labels != -100
    assert torch.equal(labels[kept], batch.kwargs["input_ids"][kept])


def test_seq2seq_decoder_gets_the_targets_shifted_right() -> None:
    model = _model("t5")
    batch = _batch(TokenInput(8), model, 2)
    dec = batch.kwargs["decoder_input_ids"]
    assert batch.targets is not None
    assert torch.equal(dec[:, 1:], batch.targets[:, :-1])
    assert (dec[:, 0] == call_of(model).decoder_start_token_id).all()


def test_a_model_without_a_head_gets_the_stand_in_loss() -> None:
    from transformers import GPT2Config, GPT2Model

    model = GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).eval()
    inp = TokenInput(8).for_model(model)
    assert inp.head == "base" and inp.classes((2, 8, 32)) is None
    batch = _batch(inp, model, 2)
    with torch.no_grad():
        out = batch.run(model)
    assert batch.targets is None
    targets = inp.targets(out.last_hidden_state.shape, batch)
    assert float(inp.loss(out, targets)) == pytest.approx(
        float(out.last_hidden_state.float().pow(2).mean()))


def test_a_users_own_module_takes_the_ids_positionally_and_learns_the_next_token() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50))
    inp = TokenInput(6).for_model(model)
    assert inp.head == "causal-lm" and inp.vocab_size == 50
    batch = _batch(inp, model, 2, seed=0)
    assert len(batch.args) == 1 and not batch.kwargs and batch.targets is not None
    with torch.no_grad():
        out = batch.run(model)
        loss = inp.loss(out, inp.targets(out.shape, batch))
    # The next token at each position but the last, as a plain shifted cross-entropy.
    ids = batch.args[0]
    expected = torch.nn.functional.cross_entropy(out[:, :-1].reshape(-1, 50),
                                                 ids[:, 1:].reshape(-1))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_meta_batches_have_shapes_and_no_data() -> None:
    model = _model("t5")
    batch = _batch(TokenInput(8), model, 2, torch.device("meta"))
    assert all(t.device.type == "meta" for t in batch.kwargs.values())
    assert batch.kwargs["decoder_input_ids"].shape == (2, 8)
    assert "use_cache" not in batch.options  # see layertime.workload.tokens


def test_a_sequence_longer_than_the_positions_is_one_line_before_any_step() -> None:
    model = _model("gpt2")  # 64 learned positions
    with pytest.raises(LayertimeError) as e:
        TokenInput(65).check(model, "hf:gpt2")
    assert "64 learned positions (n_positions)" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LayertimeError, match="max_position_embeddings"):
        layertime.profile(_hf("bert"), seq_len=100, batch_size=1, device="cpu", steps=1)
    # Rotary positions have no table: a longer sequence runs (the validating forward).
    llama = _model("llama")
    check_input(llama, WorkloadSpec(llama, TokenInput(300), batch_size=1), CPU, "hf:llama")
    with pytest.raises(LayertimeError, match="vocabulary size"):
        TokenInput(8).for_model(torch.nn.Linear(2, 2))


def test_token_and_image_inputs_do_not_mix() -> None:
    with pytest.raises(LayertimeError, match="hf:gpt2 takes token ids: give --seq-len, not "
                       "--input-shape/--image-size"):
        layertime.profile(_hf("gpt2"), image_size=32, batch_size=1, device="cpu")
    with pytest.raises(LayertimeError, match="alexnet takes images: give "):
        layertime.profile("alexnet", seq_len=16, batch_size=1, device="cpu")
    with pytest.raises(LayertimeError, match="not both"):
        WorkloadSpec.create("hf:gpt2", seq_len=16, image_size=32)


def _rows_add_up(run: Run) -> None:
    p = run.phases
    rows = sum(r.total_s for r in run.layers)
    step = rows + p.loss_s + p.step_level_s + p.unattributed_s
    assert step == pytest.approx(run.profiled_step_s, rel=1e-9)
    roles = run.roles()
    assert sum(r.share for r in roles.values()) == pytest.approx(1.0)
    assert sum(r.params_share for r in roles.values()) == pytest.approx(1.0)
    assert sum(r.time_s for r in roles.values()) == pytest.approx(run.profiled_step_s)


@pytest.mark.parametrize("model_type", ["gpt2", "bert", "llama", "t5"])
def test_profile_of_a_tiny_transformer_adds_up_by_rows_and_roles(model_type: str) -> None:
    run = layertime.profile(_hf(model_type), seq_len=16,
                            batch_size=2, device="cpu", steps=1, warmup_steps=0)
    assert run.seq_len == 16 and run.input_shape == (16,) and run.num_classes == 128
    _rows_add_up(run)
    assert run.is_transformer()
    head = run.headline()
    assert head.startswith("attention: ") and "its score/softmax core" in head
    assert "MLP: " in head and f"hf:{model_type}, batch 2, seq 16" in head
    blocks = {r.block for r in run.layers if r.block}
    assert len(blocks) == (4 if model_type == "t5" else 2)  # T5: 2 encoder + 2 decoder blocks
    # Every parameter once: the run's count is the model's (tied weights once).
    model = _model(model_type)
    assert run.params == sum(p.numel() for p in model.parameters())


def test_a_tied_head_is_charged_its_own_matmul_and_its_weight_once() -> None:
    run = layertime.profile(_hf("gpt2"), seq_len=16, batch_size=2,
                            device="cpu", steps=1, warmup_steps=0)
    rows = {r.name: r for r in run.layers}
    head, wte = rows["lm_head"], rows["transformer.wte"]
    assert head.role == "head" and head.kind == "linear"
    assert head.params == 0 and head.update_s == 0.0  # the shared weight is wte's
    assert head.forward_s > 0 and head.backward_s > 0  # its own matmul, forward and backward
    assert wte.params == 128 * 64 and wte.update_s > 0
    (note,) = run.notes
    assert "lm_head shares 8,192 parameters with transformer.wte" in note and "once" in note
    roles = run.roles()
    assert roles["head"].params == 0 and roles["head"].time_s > 0


def test_json_round_trip_and_old_files_without_roles() -> None:
    run = layertime.profile(_hf("llama"), seq_len=16, batch_size=1,
                            device="cpu", steps=1, warmup_steps=0)
    d = json.loads(run.to_json())
    assert d["seq_len"] == 16 and set(d["roles"]) >= {"attention", "mlp", "norm", "loss"}
    assert d["roles"]["attention"]["core_s"] > 0
    assert {r["role"] for r in d["layers"]} >= {"attention", "mlp", "embedding", "norm", "head"}
    back = Run.from_dict(d)
    assert back.roles() == run.roles() and back.seq_len == 16 and back.notes == run.notes
    # A file written before roles: its rows count as "other", so it reads as it did
    # then (the headline by kind, no roles block), and its shares still add up.
    for r in d["layers"]:
        del r["role"], r["block"]
    for k in ("roles", "seq_len", "notes"):
        del d[k]
    old = Run.from_dict(d)
    assert old.seq_len is None and all(r.role is None for r in old.layers)
    roles = old.roles()
    assert set(roles) == {"other", "loss", "step", "unattributed"}
    assert sum(r.share for r in roles.values()) == pytest.approx(1.0)
    assert not old.is_transformer() and not old.headline().startswith("attention: ")


def test_a_transformers_module_given_with_seq_len() -> None:
    model = _model("gpt2")
    run = layertime.profile(model, seq_len=8, batch_size=1, device="cpu", steps=1,
                            warmup_steps=0)
    assert run.model == "GPT2LMHeadModel" and run.seq_len == 8
    _rows_add_up(run)


def test_profiler_in_a_users_own_loop_watches_kinds_and_sees_tokens() -> None:
    model = _model("gpt2").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 128, (2, 12))
    with layertime.Profiler(model, opt, warmup_steps=1, every=2) as prof:
        for _ in range(5):
            opt.zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            prof.step()
    run = prof.result()
    kinds = {r.name: r.kind for r in run.layers}
    assert kinds["transformer.h.0.attn.c_attn"] == "linear"  # Conv1D, watched in warm-up
    assert kinds["transformer.h.0.attn"] == "attention"
    assert run.seq_len == 12 and run.batch_size == 2 and run.optimizer == "adamw"
    assert run.is_transformer() and run.notes
    assert all(not m._forward_hooks for m in model.modules())
    assert torch.backends.mha.get_fastpath_enabled()


def test_amp_bf16_and_adam_on_tokens() -> None:
    run = layertime.profile(_hf("llama"), seq_len=16, batch_size=2,
                            device="cpu", steps=1, warmup_steps=0, amp="bf16", optimizer="adam")
    assert run.amp == "bf16" and run.optimizer == "adam" and not run.warnings
    _rows_add_up(run)


@pytest.mark.slow
def test_data_parallel_token_run(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "run.json"
    flags = [a for kv in tiny("gpt2") for a in ("--config", kv)]
    proc = subprocess.run(
        [sys.executable, "-m", "layertime", "profile", "hf:gpt2", *flags, "--seq-len", "16",
         "--batch-size", "2", "--nproc", "2", "--steps", "1", "--no-store", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    run = Run.load(out)
    assert run.world_size == 2 and run.seq_len == 16 and run.is_transformer()
    assert "transformer.h.0.attn.c_attn" in {r.name for r in run.layers}


def test_layers_alone_of_a_transformer_or_a_one_line_refusal() -> None:
    from layertime.measure.isolated import bench_workload

    bench = bench_workload(WorkloadSpec(_hf("gpt2"), TokenInput(16), batch_size=1, device="cpu"),
                           warmup=0, repeats=1)
    rows = {b.name: b for b in bench.layers}
    assert rows["transformer.h.0.attn.c_attn"].kind == "linear"  # Conv1D, by what it computes
    assert bench.input_shape == (16,) and bench.batch_size == 1
    # Llama's rotary embedding takes position_ids by keyword: it cannot run alone.
    with pytest.raises(LayertimeError) as e:
        bench_workload(WorkloadSpec(_hf("llama"), TokenInput(16), batch_size=1, device="cpu"),
                       warmup=0, repeats=1)
    assert "model.rotary_emb" in str(e.value) and "by keyword" in str(e.value)
    assert "\n" not in str(e.value)
