"""``torch.compile`` profiled per layer: the collector (``collector.py``), what the compiler
knows of each kernel's origin (``capture.py``, ``graphs.py``), the traced session
(``session.py``) and the join of the two (``attribute.py``)."""
