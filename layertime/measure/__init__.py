"""Collectors: the in-situ tracer and the profile runner."""
