"""Renderers: they only read a Run."""
