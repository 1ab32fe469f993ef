"""Integrations with training frameworks that own the loop.

``layertime.integrations.lightning.LayertimeCallback`` (PyTorch Lightning,
extra ``layertime[lightning]``) and ``layertime.integrations.hf.LayertimeTrainerCallback``
(Hugging Face ``Trainer``, extra ``layertime[hf]``) profile a window of
optimizer steps with the same attribution as ``layertime.Profiler``.  Each
module imports its framework; importing this package imports neither.
"""
