"""Memory per layer, measured in a step of its own (``session.py``; the saved-tensor
hooks in ``saved.py``, what the step holds by address in ``held.py``, the allocator's
events in ``allocator.py``).

A profile's timed steps are never touched: memory is measured in two extra steps
run inside one ``torch.profiler`` session that records the allocator's events
(``profile_memory``, CPU activity only: no CUPTI), with the module ranges of
:mod:`layertime.measure.tracer` around every module call.  The first step only
makes every block the second one frees known to the profiler (a free of a block
allocated before a session is not reported, and torch warns about it); the
second is the measured step.  In it:

* **saved activations**: ``torch.autograd.graph.saved_tensors_hooks`` sees every
  tensor an op saves for backward, with the module running (a hook pair on each
  module keeps the stack); each storage is counted once, by its bytes; parameters,
  buffers and their views are left out (they are held anyway).  A storage saved by
  one layer is charged to it; one saved by several layers to the layer whose op
  allocated it (the innermost module range around its allocation event; an in-place
  op allocates nothing, so an in-place ReLU's saved output is the producer's), and
  to the first saver when no layer allocated it (the batch).  Saves in the loss,
  outside any layer, are the summary's ``loss_saved_bytes``.
* **activation checkpointing**: ``torch.utils.checkpoint`` saves its inputs through
  the same hooks (non-reentrant: ``_CheckpointFrame.save_inputs``; reentrant:
  ``CheckpointFunction``), then pushes hooks of its own, so the layers inside save
  nothing here; the inputs are charged to the module it checkpoints (read from the
  checkpoint call's ``fn``/``function``, whose frame is the hook's caller), so a
  checkpointed block shows what it keeps.  Its recompute is charged to its layers'
  backward in the timed steps (``attribute.py``: ``recompute``).
* **parameters, gradients, optimizer state** per layer: the tensors themselves after
  the step (gradients after backward, optimizer state after the update: the priming
  step has run the optimizer once), a DTensor's by its local shard (what the rank
  holds), each parameter at its first owner as :class:`ModuleTable` counts it.
* **the peak and what is live then**: on CUDA the allocator's own numbers
  (``max_memory_allocated`` over the measured step, and its total at every event);
  on the CPU every allocation and free of the step by address, on top of the
  tensors live at its start.  Every live block is classified by its address:
  parameter, gradient, optimizer state, saved activation, or other.

Nothing is left behind: the hooks and the profiler are removed in ``finally``
(:meth:`MemorySession.abort`), nothing is stored on the user's modules, and the
saved-tensor hooks return a detached alias (the graph holds no extra reference).
"""

from __future__ import annotations

from layertime.measure.memory.held import LayerMemory
from layertime.measure.memory.session import (
    MemoryMeasurement,
    MemorySession,
    SavedStorage,
    run_memory_step,
    with_memory,
)

__all__ = ["LayerMemory", "MemoryMeasurement", "MemorySession", "SavedStorage",
           "run_memory_step", "with_memory"]
