"""``torch.compile`` profiled per layer: the collector (``collector.py``), what the compiler
knows of each kernel's origin (``capture.py``, ``graphs.py``), the traced session
(``session.py``), the join of the two (``attribute.py``), and what the user compiled
(``detect.py``: a whole model, compiled parts, a wrapper's mode)."""
