"""Profiling across ranks: data-parallel (DDP) and sharded (FSDP2, tensor-parallel) runs.

``launch.py`` starts the ranks under torchrun; ``ddp.py`` profiles one rank of a DDP run,
with ``ddp_comm.py`` charging its gradient all-reduce to layers; ``health.py`` names the
rank that died or hung; ``link.py`` times the link; ``merge.py`` merges the ranks' runs.
"""
