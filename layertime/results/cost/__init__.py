"""What the cost model computes: the estimate and its rows (``estimate``, ``rows``,
``roles``), a calibration of a device (``calibration``), a run joined with a prediction
(``joined``) and the sharded step's prediction (``sharded``)."""
