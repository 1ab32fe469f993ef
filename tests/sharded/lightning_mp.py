"""Lightning's ModelParallelStrategy on the CPU (2 processes, gloo), FSDP2 applied in
``configure_model``, with layertime's callback; rank 0 writes the run to ``sys.argv[1]``.
Lightning starts the second process itself (it runs this script again)."""

from __future__ import annotations

import sys

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from layertime.integrations.lightning import LayertimeCallback


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                    nn.Linear(64, 10))

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for m in self.layers:
            if isinstance(m, nn.Linear):
                fully_shard(m, mesh=mesh)
        fully_shard(self, mesh=mesh)

    def training_step(self, batch, _i):  # type: ignore[no-untyped-def]
        x, y = batch
        return nn.functional.cross_entropy(self.layers(x), y)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(512, 32), torch.randint(0, 10, (512,)))
    cb = LayertimeCallback(start_step=2, steps=4, json=sys.argv[1], verbose=False)
    trainer = L.Trainer(
        accelerator="cpu", devices=2,
        strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
        max_steps=12, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[cb],
    )
    trainer.fit(Net(), DataLoader(data, batch_size=8))
    if trainer.is_global_zero:
        print("skipped:", cb.skipped)
    import torch.distributed as dist

    from layertime.measure.parallel.ranks import leave_process_group

    # The sharded model freed and gloo's threads stopped before exit, not at the
    # interpreter's teardown (where a torch thread needing the GIL aborts the process).
    del trainer
    if dist.is_initialized():
        leave_process_group()


if __name__ == "__main__":
    main()
