"""The training step layertime measures: a synthetic batch, the loss, the optimizer.

One step is zero_grad, forward, loss, backward and the optimizer update, in
that order, each phase in its own profiler range when traced.  Batches are
random (weights and datasets are never downloaded) and made once, on the
device, so the step measures training, not data loading.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from layertime.errors import LayertimeError, OutOfMemory
from layertime.measure.tracer import phase

if TYPE_CHECKING:
    from layertime.token_workload import TokenTask

OPTIMIZERS = ("sgd", "adam", "adamw")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
#: Weight of auxiliary classifier losses (GoogLeNet, Inception v3), as in their papers.
AUX_LOSS_WEIGHT = 0.3


@dataclass(frozen=True)
class WorkloadConfig:
    """What one training step does; validated on construction."""

    batch_size: int = 128
    input_shape: tuple[int, ...] = (3, 224, 224)
    num_classes: int = 1000
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dtype: str = "float32"
    amp: str | None = None
    seed: int = 0
    #: Token models (issue 11): token ids per sequence; ``input_shape`` is then
    #: ``(seq_len,)`` and the batch and loss come from ``layertime.token_workload``.
    seq_len: int | None = None

    def __post_init__(self) -> None:
        if self.seq_len is not None and self.seq_len < 1:
            raise LayertimeError(f"--seq-len must be at least 1, not {self.seq_len}")
        if self.batch_size < 1:
            raise LayertimeError(f"batch size must be at least 1, not {self.batch_size}")
        if not self.input_shape or any(d < 1 for d in self.input_shape):
            raise LayertimeError(f"bad input shape {self.input_shape}: every size must be >= 1")
        if self.num_classes < 1:
            raise LayertimeError(f"num_classes must be at least 1, not {self.num_classes}")
        if self.optimizer not in OPTIMIZERS:
            raise LayertimeError(
                f"unknown optimizer {self.optimizer!r} (choose {', '.join(OPTIMIZERS)})"
            )
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise LayertimeError(f"unknown --amp {self.amp!r} (choose bf16 or fp16)")
        if self.dtype not in DTYPES:
            raise LayertimeError(f"unknown dtype {self.dtype!r} (choose {', '.join(DTYPES)})")


def resolve_device(text: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; CUDA without CUDA is an error."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError as e:
        raise LayertimeError(f"unknown device {text!r} (use cpu, cuda or cuda:N)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LayertimeError("--device cuda asked for, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LayertimeError(
                f"no {dev}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type != "cpu":
        raise LayertimeError(f"device {text!r} is not supported (use cpu or cuda)")
    return dev


def is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg or "not enough memory" in msg
    )


def out_of_memory(e: BaseException, batch_size: int, device: torch.device) -> OutOfMemory:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    hint = f"; try --batch-size {batch_size // 2}" if batch_size > 1 else ""
    return OutOfMemory(
        f"batch {batch_size} does not fit in {device.type} memory ({first[:160]}){hint}"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _logits(out: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The main output and any auxiliary classifier outputs of a model."""
    if isinstance(out, torch.Tensor):
        return out, []
    if isinstance(out, dict):
        for key in ("logits", "out", "output"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key], []
        tensors = [v for v in out.values() if isinstance(v, torch.Tensor)]
    elif isinstance(out, (tuple, list)):
        tensors = [v for v in out if isinstance(v, torch.Tensor)]
    else:
        tensors = [v for v in vars(out).values() if isinstance(v, torch.Tensor)] if hasattr(
            out, "__dict__"
        ) else []
    if not tensors:
        raise LayertimeError(f"the model returned {type(out).__name__}, which holds no tensor")
    main = tensors[0]
    return main, [t for t in tensors[1:] if t.shape == main.shape]


def check_input(
    model: nn.Module, config: WorkloadConfig, device: torch.device, label: str
) -> torch.Size:
    """One tiny forward (batch 2, no grad, eval mode) to catch a bad shape early.

    Returns the shape of the main output.  The model's train/eval mode is
    restored afterwards, module by module (a frozen norm layer in a training
    model stays in eval mode).
    """
    if config.seq_len is not None:  # token models (issue 11)
        from layertime.token_workload import check_tokens

        task = check_tokens(model, config.seq_len, device, label, _autocast(device, config.amp))
        return torch.Size((1, task.classes or 0))
    modes = [(m, m.training) for m in model.modules()]
    x = torch.randn((2, *config.input_shape), device=device, dtype=DTYPES[config.dtype])
    shape = "x".join(str(d) for d in config.input_shape)
    try:
        model.eval()
        with torch.no_grad(), _autocast(device, config.amp):
            out = model(x)
        main, _ = _logits(out)
    except LayertimeError:
        raise
    except Exception as e:
        if is_out_of_memory(e):
            raise out_of_memory(e, 2, device) from e
        raise LayertimeError(f"input shape {shape} does not fit {label}: {_first_line(e)}") from e
    finally:
        for m, mode in modes:
            m.training = mode
    if main.dim() < 2:
        raise LayertimeError(
            f"{label} returned an output of shape {tuple(main.shape)}; "
            "expected (batch, classes, ...) logits"
        )
    return main.shape


def _autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager[Any]:
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def _nullphase(name: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def make_optimizer(model: nn.Module, config: WorkloadConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LayertimeError("the model has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr * 0.1)
    return torch.optim.AdamW(params, lr=config.lr * 0.1, weight_decay=config.weight_decay)


class Workload:
    """A model, its optimizer and one synthetic batch on a device."""

    def __init__(
        self,
        model: nn.Module,
        config: WorkloadConfig,
        device: torch.device,
        output_shape: torch.Size,
    ) -> None:
        self.model = model
        self.config = config
        self.device = device
        self.optimizer = make_optimizer(model, config)
        gen = torch.Generator(device="cpu").manual_seed(config.seed)
        n = config.batch_size
        # Token models (issue 11): the batch and the loss come from their task.
        self.task: TokenTask | None = None
        if config.seq_len is not None:
            from layertime.token_workload import task_for

            self.task = task_for(model, config.seq_len)
            self.batch = self.task.make_batch(n, device, gen)
        else:
            x = torch.randn((n, *config.input_shape), generator=gen, dtype=DTYPES[config.dtype])
            classes = int(output_shape[1])
            y = torch.randint(0, classes, (n, *output_shape[2:]), generator=gen)
            self.x = x.to(device)
            self.y = y.to(device)
        self.loss_fn = nn.CrossEntropyLoss()
        self.scaler = (
            torch.amp.GradScaler(device.type)
            if config.amp == "fp16" and device.type == "cuda"
            else None
        )
        # Before its first step a scaler reports its initial scale (no sync).
        self._last_scale = float(self.scaler.get_scale()) if self.scaler is not None else None

    def update_skipped(self) -> bool:
        """Whether the last step's update was skipped by fp16 loss scaling.

        GradScaler starts at 65536 and halves its scale (skipping
        ``optimizer.step``) whenever gradients overflow, so early steps can
        have an empty update.  Reads the scale (a device sync): call it
        outside timed regions, after every step.
        """
        if self.scaler is None:
            return False
        scale = float(self.scaler.get_scale())
        skipped = self._last_scale is not None and scale < self._last_scale
        self._last_scale = scale
        return skipped

    def step(self, traced: bool = False) -> torch.Tensor:
        """One training step; returns the (detached) loss."""
        rng: Callable[[str], contextlib.AbstractContextManager[None]] = (
            phase if traced else _nullphase
        )
        amp = self.config.amp
        with rng("zero_grad"):
            self.optimizer.zero_grad(set_to_none=True)
        if self.task is not None:  # token models (issue 11)
            with _autocast(self.device, amp):
                out = self.task.forward(self.model, self.batch)
            with rng("loss"), _autocast(self.device, amp):
                loss = self.task.loss(out, self.batch)
        else:
            with _autocast(self.device, amp):
                out = self.model(self.x)
            with rng("loss"), _autocast(self.device, amp):
                main, aux = _logits(out)
                loss = self.loss_fn(main, self.y)
                for a in aux:
                    loss = loss + AUX_LOSS_WEIGHT * self.loss_fn(a, self.y)
        with rng("backward"):
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        with rng("update"):
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        return loss.detach()


@contextlib.contextmanager
def training_mode(model: nn.Module) -> Iterator[None]:
    """Put the model in train mode for the block and restore its mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.train()
        yield
    finally:
        for m, mode in modes:
            m.training = mode
