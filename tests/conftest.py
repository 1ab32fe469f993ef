"""Shared fixtures for the attribution tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run torch on one thread for a test module, then restore the count.

    On a small shared machine, OpenMP threads waiting on each other turn a
    millisecond step into half a second; one thread keeps real-net tests fast.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _private_run_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every CLI subprocess it starts) writes runs to its own database
    and device profiles to its own config folder, never to the user's."""
    monkeypatch.setenv("LAYERTIME_DB", str(tmp_path_factory.mktemp("store") / "runs.db"))
    # Device profiles that `layertime calibrate` saves go to a folder of the test's own.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """CUDA-only tests (``-m cuda``) are deselected where there is no GPU, and said so:
    they run in ``benchmarks/gpu_check.py`` on a GPU machine."""
    import torch

    if torch.cuda.is_available():
        return
    cuda = [it for it in items if it.get_closest_marker("cuda") is not None]
    if not cuda:
        return
    items[:] = [it for it in items if it.get_closest_marker("cuda") is None]
    config.hook.pytest_deselected(items=cuda)
    config.stash[_CUDA_DESELECTED] = len(cuda)


_CUDA_DESELECTED = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    n = config.stash.get(_CUDA_DESELECTED, 0)
    if n:
        terminalreporter.write_line(
            f"{n} CUDA-only tests not run: no GPU here "
            "(benchmarks/gpu_check.py runs them on a GPU machine)"
        )
