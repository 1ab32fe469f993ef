"""The token workload: batches, the loss of each head, validation, and profiles of tiny transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import layertime
from _tiny_transformers import tiny
from layertime.errors import LayertimeError
from layertime.models.hf import resolve_hf
from layertime.result import Run
from layertime.token_workload import MLM_PROBABILITY, check_tokens, task_for

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _model(model_type: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return resolve_hf(model_type, tiny(model_type)).build()


@pytest.mark.parametrize("model_type, head", [("gpt2", "causal-lm"), ("bert", "masked-lm"),
                                              ("llama", "causal-lm"), ("t5", "seq2seq-lm")])
def test_the_loss_is_the_one_transformers_computes_from_labels(model_type: str, head: str) -> None:
    model = _model(model_type).eval()
    task = task_for(model, 16)
    assert task.head == head and task.vocab_size == 128
    batch = task.make_batch(3, torch.device("cpu"), torch.Generator().manual_seed(1))
    ids = batch.inputs["input_ids"]
    assert ids.shape == (3, 16) and int(ids.min()) >= 0 and int(ids.max()) < 128
    with torch.no_grad():
        ours = task.loss(task.forward(model, batch), batch)
        theirs = model(**batch.inputs, labels=batch.labels).loss
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_masked_lm_predicts_15_percent_of_each_sequence() -> None:
    task = task_for(_model("bert"), 40)
    batch = task.make_batch(4, torch.device("cpu"))
    assert batch.labels is not None
    picked = (batch.labels != -100).sum(dim=1)
    assert picked.tolist() == [round(MLM_PROBABILITY * 40)] * 4
    kept = batch.labels != -100
    assert torch.equal(batch.labels[kept], batch.inputs["input_ids"][kept])


def test_seq2seq_decoder_gets_the_targets_shifted_right() -> None:
    task = task_for(_model("t5"), 8)
    batch = task.make_batch(2, torch.device("cpu"))
    dec = batch.inputs["decoder_input_ids"]
    assert batch.labels is not None
    assert torch.equal(dec[:, 1:], batch.labels[:, :-1])
    assert (dec[:, 0] == task.decoder_start_token_id).all()


def test_a_model_without_a_head_gets_the_stand_in_loss() -> None:
    from transformers import GPT2Config, GPT2Model

    model = GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).eval()
    task = task_for(model, 8)
    assert task.head == "base" and task.classes is None
    batch = task.make_batch(2, torch.device("cpu"))
    with torch.no_grad():
        out = task.forward(model, batch)
    assert float(task.loss(out, batch)) == pytest.approx(
        float(out.last_hidden_state.float().pow(2).mean()))


def test_meta_batches_have_shapes_and_no_data() -> None:
    task = task_for(_model("t5"), 8)
    batch = task.make_batch(2, torch.device("meta"))
    assert all(t.device.type == "meta" for t in batch.inputs.values())
    assert batch.inputs["decoder_input_ids"].shape == (2, 8)


def test_a_sequence_longer_than_the_positions_is_one_line_before_any_step() -> None:
    model = _model("gpt2")  # 64 learned positions
    with pytest.raises(LayertimeError) as e:
        check_tokens(model, 65, torch.device("cpu"), "hf:gpt2")
    assert "64 learned positions (n_positions)" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LayertimeError, match="max_position_embeddings"):
        layertime.profile("hf:bert", hf_config=tiny("bert"), seq_len=100, batch_size=1,
                          device="cpu", steps=1)
    # Rotary positions have no table: a longer sequence runs.
    check_tokens(_model("llama"), 300, torch.device("cpu"), "hf:llama")
    with pytest.raises(LayertimeError, match="not a transformers text model"):
        task_for(torch.nn.Linear(2, 2), 8)


def _rows_add_up(run: Run) -> None:
    p = run.phases
    rows = sum(r.total_s for r in run.layers)
    step = rows + p.loss_s + p.zero_grad_s + p.data_s + p.unattributed_s
    assert step == pytest.approx(run.profiled_step_s, rel=1e-9)
    roles = run.roles()
    assert sum(r.share for r in roles.values()) == pytest.approx(1.0)
    assert sum(r.params_share for r in roles.values()) == pytest.approx(1.0)
    assert sum(r.time_s for r in roles.values()) == pytest.approx(run.profiled_step_s)


@pytest.mark.parametrize("model_type", ["gpt2", "bert", "llama", "t5"])
def test_profile_of_a_tiny_transformer_adds_up_by_rows_and_roles(model_type: str) -> None:
    run = layertime.profile(f"hf:{model_type}", hf_config=tiny(model_type), seq_len=16,
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
    run = layertime.profile("hf:gpt2", hf_config=tiny("gpt2"), seq_len=16, batch_size=2,
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
    run = layertime.profile("hf:llama", hf_config=tiny("llama"), seq_len=16, batch_size=1,
                            device="cpu", steps=1, warmup_steps=0)
    d = json.loads(run.to_json())
    assert d["seq_len"] == 16 and set(d["roles"]) >= {"attention", "mlp", "norm", "loss"}
    assert d["roles"]["attention"]["core_s"] > 0
    assert {r["role"] for r in d["layers"]} >= {"attention", "mlp", "embedding", "norm", "head"}
    back = Run.from_dict(d)
    assert back.roles() == run.roles() and back.seq_len == 16 and back.notes == run.notes
    # A file written before roles: the rows are placed when read.
    for r in d["layers"]:
        del r["role"], r["block"]
    for k in ("roles", "seq_len", "notes"):
        del d[k]
    old = Run.from_dict(d)
    assert old.seq_len is None and all(r.role is None for r in old.layers)
    assert {k: round(v.share, 12) for k, v in old.roles().items()} == {
        k: round(v.share, 12) for k, v in run.roles().items()}


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
    run = layertime.profile("hf:llama", hf_config=tiny("llama"), seq_len=16, batch_size=2,
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
