"""What a data-parallel or sharded run adds to a run: communication per layer and per
collective (``comm``), the ranks of a DDP run (``data_parallel``) and the sharding layout
(``sharded``)."""
