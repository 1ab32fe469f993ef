"""The framework integrations are optional extras: without the framework, one clear line."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from layertime.errors import LayertimeError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("module", "frameworks", "extra"),
    [
        ("layertime.integrations.lightning", ("lightning", "pytorch_lightning"), "lightning"),
        ("layertime.integrations.hf", ("transformers",), "hf"),
    ],
)
def test_a_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, frameworks: tuple[str, ...], extra: str
) -> None:
    for name in list(sys.modules):
        if name == module or any(name == f or name.startswith(f + ".") for f in frameworks):
            monkeypatch.delitem(sys.modules, name)
    for f in frameworks:
        monkeypatch.setitem(sys.modules, f, None)  # "not installed" for this test
    with pytest.raises(ImportError) as caught:
        importlib.import_module(module)
    err = caught.value
    assert isinstance(err, LayertimeError)
    assert f"pip install 'layertime[{extra}]'" in str(err) and "\n" not in str(err)


def test_the_extras_are_declared_and_the_setup_installs_them() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    extras = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    lines = {ln.split("=")[0].strip(): ln for ln in extras.splitlines() if "=" in ln}
    assert '"lightning' in lines["lightning"]
    assert '"transformers' in lines["hf"] and '"accelerate' in lines["hf"]  # the Trainer needs it
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "lightning" in setup and "hf" in setup


def test_importing_the_package_imports_no_framework() -> None:
    import layertime.integrations  # noqa: F401

    code = "import layertime, layertime.integrations, sys; " \
           "print(any(m in sys.modules for m in ('lightning', 'transformers')))"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
