"""Counting one training step on the meta device: the ops each layer runs (``step_state``,
``counts``), their FLOPs and bytes (``op_work``, ``op_bytes``), their GEMM shapes
(``op_shapes``), the kernels the target runs (``kernel_choice``, ``attention``), the
optimizer's work (``update``) and the memory a step holds (``memory``)."""
