"""Attribute traces recorded elsewhere with the stock profiler (``layertime attribute``).

One concern per file: ``stream.py`` reads a Chrome/Kineto trace file as a stream with
one-line errors; ``records.py`` keeps the events attribution needs; ``sources.py`` finds
the files and their ranks; ``convert.py`` turns events into layertime's op events with
module ranges; ``lightning.py`` reads Lightning's ranges; ``op_kinds.py`` decides a
module's kind from its ops; ``table.py`` is the trace's module table; ``mapping.py`` names
modules by a model's dotted paths; ``collect.py`` attributes the steps into a ``Run``;
``facts.py`` reads what a trace says of its machine and input.  ``torch.profiler``'s
``on_trace_ready`` hook is ``layertime.api.trace_handler`` (it prints).
"""

from layertime.measure.traces.collect import TraceAttribution, attribute, attribute_traces

__all__ = ["TraceAttribution", "attribute", "attribute_traces"]
