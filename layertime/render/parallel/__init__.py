"""Terminal tables of data-parallel and sharded runs: communication per layer and per
collective (``comm``), the sharding layout and per-rank spread (``sharded``)."""
