"""The framework callbacks on FSDP (GPU only: Lightning's FSDPStrategy and accelerate's FSDP
refuse the CPU): Lightning's FSDPStrategy and the Hugging Face Trainer with ``fsdp=...``,
one rank, each writing its run to ``OUT/lightning.json`` and ``OUT/trainer.json``.

Run under torchrun (``benchmarks/gpu_check.py`` does): ``torchrun --nproc-per-node 1
callbacks_fsdp.py OUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset


def lightning(out: Path) -> None:
    import lightning as L
    from lightning.pytorch.strategies import FSDPStrategy

    from layertime.integrations.lightning import LayertimeCallback

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024),
                                        nn.ReLU(), nn.Linear(1024, 10))

        def training_step(self, batch, _i):  # type: ignore[no-untyped-def]
            x, y = batch
            return nn.functional.cross_entropy(self.layers(x), y)

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = TensorDataset(torch.randn(2048, 256), torch.randint(0, 10, (2048,)))
    cb = LayertimeCallback(start_step=3, steps=6, json=out / "lightning.json", verbose=False)
    trainer = L.Trainer(accelerator="cuda", devices=1,
                        strategy=FSDPStrategy(auto_wrap_policy={nn.Linear}), max_steps=14,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cb])
    trainer.fit(Net(), DataLoader(data, batch_size=64))


class _Tokens(Dataset):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 256

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = torch.randint(0, 1024, (64,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": t, "labels": t}


def trainer(out: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from layertime.integrations.hf import LayertimeTrainerCallback

    model = GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=1024,
                                       n_positions=128))
    args = TrainingArguments(output_dir=str(out / "hf"), per_device_train_batch_size=8,
                             max_steps=14, fsdp=True,
                             fsdp_config={"transformer_layer_cls_to_wrap": ["GPT2Block"]},
                             report_to=[], save_strategy="no", logging_strategy="no",
                             disable_tqdm=True)
    cb = LayertimeTrainerCallback(start_step=3, steps=6, json=out / "trainer.json",
                                  verbose=False)
    Trainer(model=model, args=args, train_dataset=_Tokens(), callbacks=[cb]).train()


if __name__ == "__main__":
    target = Path(sys.argv[1])
    which = sys.argv[2] if len(sys.argv) > 2 else "both"
    if which in ("both", "lightning"):
        lightning(target)
    if which in ("both", "trainer"):
        trainer(target)
