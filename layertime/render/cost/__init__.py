"""Terminal tables of the cost model: the estimate (``table``), a run beside its
prediction and a calibration (``predict``), the sharded step's prediction (``sharded``)."""
