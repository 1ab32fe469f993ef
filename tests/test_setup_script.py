"""scripts/setup.sh, .ci/run and the README's first two commands, checked without installing.

The choices the setup makes (which Python, which virtual environment, what it installs, what it
says about Chromium) are checked with its dry run (LAYERTIME_SETUP_DRY_RUN=1) in a scratch
project whose PATH holds only the tools the script uses, with stand-ins for python3, id and
apt-get, so every branch is reached whatever this machine has installed and whoever runs it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "scripts" / "setup.sh"
BASH = shutil.which("bash") or "/bin/bash"
# The tools setup.sh calls besides bash's builtins and the stand-ins below.
TOOLS = ("dirname", "df", "awk", "readlink")


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("```\n"), "the README must open with its commands"
    block = text[4:text.index("\n```", 4)]
    return [line for line in block.splitlines() if line.strip()]


def _ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [ln.strip() for ln in lines
            if ln.strip() and not ln.lstrip().startswith("#")
            and not ln.startswith(("set ", "cd "))]


def test_setup_script_parses() -> None:
    r = subprocess.run([BASH, "-n", str(SETUP)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_readme_opens_with_two_commands_that_use_the_setup_environment() -> None:
    first, second = _readme_commands()
    assert first == "bash scripts/setup.sh && .venv/bin/layertime profile alexnet"
    assert second.startswith(".venv/bin/python -m pytest")


def test_ci_runs_setup_then_exactly_the_readme_test_command() -> None:
    first, second = _readme_commands()
    assert _ci_commands() == [first.split(" && ")[0], second]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_setup_installs_every_extra_and_torch_stays_a_range() -> None:
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    assert {"test", "hf", "lightning", "timm"} <= set(extras)
    assert extras["hf"][0] == "transformers>=4.40"  # and accelerate, which the Trainer needs
    assert any(r.startswith("accelerate") for r in extras["hf"])
    assert extras["lightning"] == ["lightning>=2.2"]
    m = re.search(r'^extras="([^"]+)"', SETUP.read_text(), re.M)
    assert m, "setup.sh names the extras it installs in extras=\"...\""
    assert set(m.group(1).split(",")) == set(extras)
    torch = [d for d in project["dependencies"] if re.match(r"torch\b(?!vision)", d)]
    assert torch == ["torch>=2.4,!=2.13.0"]


# --- the dry run ----------------------------------------------------------------------------

FAKE_PYTHON = """#!/bin/sh
case "$*" in
    *ensurepip*) exit {ensurepip_rc} ;;
    *version_info*) echo "{version} {exe}" ;;
esac
exit 0
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


class Sandbox:
    """A scratch project (scripts/setup.sh copied in) and a PATH of only the needed tools."""

    def __init__(self, tmp: Path) -> None:
        self.project = tmp / "proj"
        (self.project / "scripts").mkdir(parents=True)
        shutil.copy(SETUP, self.project / "scripts" / "setup.sh")
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for tool in TOOLS:
            real = shutil.which(tool)
            assert real, f"{tool} is needed by setup.sh"
            (self.bin / tool).symlink_to(real)
        self.user(root=True)
        self.python()

    def user(self, root: bool) -> None:
        _script(self.bin / "id", f"#!/bin/sh\necho {0 if root else 1000}\n")

    def apt(self) -> None:
        _script(self.bin / "apt-get", "#!/bin/sh\necho apt-get must not run in a dry run >&2\nexit 9\n")

    def chromium(self) -> None:
        _script(self.bin / "chromium", "#!/bin/sh\nexit 0\n")

    def python(self, version: str = "3 11 7", ensurepip: bool = True, name: str = "python3") -> Path:
        return _script(self.bin / name, FAKE_PYTHON.format(
            ensurepip_rc=0 if ensurepip else 1, version=version, exe=self.bin / name))

    def venv(self, where: Path) -> Path:
        (where / "bin").mkdir(parents=True)
        _script(where / "bin" / "python", FAKE_PYTHON.format(
            ensurepip_rc=0, version="3 11 7", exe=where / "bin" / "python"))
        return where

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        before = sorted(p.name for p in self.project.iterdir())
        full = {"PATH": str(self.bin), "HOME": str(self.project), "LAYERTIME_SETUP_DRY_RUN": "1"}
        full.update(env)
        r = subprocess.run([BASH, str(self.project / "scripts" / "setup.sh")], env=full,
                           capture_output=True, text=True, timeout=60)
        # A dry run changes nothing.
        assert sorted(p.name for p in self.project.iterdir()) == before
        return r


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def _would_run(out: str) -> list[str]:
    return [ln[len("setup: would run: "):] for ln in out.splitlines()
            if ln.startswith("setup: would run: ")]


def _one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("setup: error: "), r.stderr
    return lines[0]


PIP = ".venv/bin/python -m pip install --disable-pip-version-check -e .[test,hf,lightning,timm]"


def test_without_an_active_venv_it_makes_dot_venv_with_python3(box: Sandbox) -> None:
    box.chromium()
    r = box.run()
    assert r.returncode == 0, r.stderr
    assert f"setup: [1/4] Python: {box.bin / 'python3'} (3.11.7)" in r.stdout
    assert _would_run(r.stdout) == [f"{box.bin / 'python3'} -m venv .venv", PIP]
    assert "--quiet" not in r.stdout  # pip's progress is shown
    assert not (box.project / ".venv").exists()


def test_layertime_python_chooses_the_interpreter(box: Sandbox) -> None:
    box.chromium()
    other = box.python(version="3 12 1", name="python3.12")
    r = box.run(LAYERTIME_PYTHON="python3.12")
    assert r.returncode == 0, r.stderr
    assert _would_run(r.stdout)[0] == f"{other} -m venv .venv"


def test_an_active_venv_is_used_and_dot_venv_links_to_it(box: Sandbox, tmp_path: Path) -> None:
    box.chromium()
    env = box.venv(tmp_path / "myenv")
    r = box.run(VIRTUAL_ENV=str(env))
    assert r.returncode == 0, r.stderr
    assert f"setup: [1/4] Python: {env / 'bin' / 'python'}" in r.stdout
    assert _would_run(r.stdout) == [f"ln -sfn {env} .venv", PIP]


def test_an_active_venv_that_is_dot_venv_is_used_as_it_is(box: Sandbox) -> None:
    box.chromium()
    env = box.venv(box.project / ".venv")
    r = box.run(VIRTUAL_ENV=str(env))
    assert r.returncode == 0, r.stderr
    assert _would_run(r.stdout) == [PIP]


def test_an_active_venv_beside_another_dot_venv_is_one_error_line(box: Sandbox,
                                                                  tmp_path: Path) -> None:
    box.venv(box.project / ".venv")
    env = box.venv(tmp_path / "myenv")
    line = _one_error_line(box.run(VIRTUAL_ENV=str(env)))
    assert "remove .venv" in line and "deactivate" in line


def test_an_active_venv_without_python_is_one_error_line(box: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()
    line = _one_error_line(box.run(VIRTUAL_ENV=str(tmp_path / "gone")))
    assert "has no bin/python" in line


def test_a_working_dot_venv_is_reused(box: Sandbox) -> None:
    box.chromium()
    env = box.venv(box.project / ".venv")
    (box.bin / "python3").unlink()  # not needed then
    r = box.run()
    assert r.returncode == 0, r.stderr
    assert f"setup: [1/4] Python: {env / 'bin' / 'python'} (3.11.7)" in r.stdout
    assert "setup: [2/4] virtual environment: .venv (exists, reused" in r.stdout
    assert _would_run(r.stdout) == [PIP]


def test_a_dot_venv_link_left_by_an_earlier_active_venv_is_reused(box: Sandbox,
                                                                  tmp_path: Path) -> None:
    box.chromium()
    env = box.venv(tmp_path / "myenv")
    (box.project / ".venv").symlink_to(env)
    r = box.run()
    assert r.returncode == 0, r.stderr
    assert f"setup: [2/4] virtual environment: .venv, a link to {env} (reused" in r.stdout
    assert _would_run(r.stdout) == [PIP]


def test_a_broken_dot_venv_is_made_anew(box: Sandbox) -> None:
    box.chromium()
    (box.project / ".venv" / "bin").mkdir(parents=True)  # no python: an interrupted setup
    r = box.run()
    assert r.returncode == 0, r.stderr
    assert _would_run(r.stdout) == ["rm -rf .venv", f"{box.bin / 'python3'} -m venv .venv", PIP]


def test_an_old_python_is_one_error_line(box: Sandbox) -> None:
    box.python(version="3 9 2")
    line = _one_error_line(box.run())
    assert "needs Python 3.10 or newer" in line and "3.9" in line


def test_a_python3_that_is_not_python_3_is_one_error_line(box: Sandbox) -> None:
    _script(box.bin / "python3", "#!/bin/sh\necho Python 2.7.18\n")
    line = _one_error_line(box.run())
    assert "could not run" in line and "3.10 or newer" in line


def test_no_python3_is_one_error_line(box: Sandbox) -> None:
    (box.bin / "python3").unlink()
    line = _one_error_line(box.run())
    assert "no python3 on PATH" in line


def test_no_python3_as_root_with_apt_installs_debians(box: Sandbox) -> None:
    (box.bin / "python3").unlink()
    box.apt()
    box.chromium()
    r = box.run()
    assert r.returncode == 0, r.stderr
    assert _would_run(r.stdout)[:2] == [
        "apt-get update", "env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv"]


def test_a_python_that_cannot_make_a_venv_is_one_error_line_naming_the_package(box: Sandbox) -> None:
    box.python(ensurepip=False)
    box.apt()
    box.user(root=False)
    line = _one_error_line(box.run())
    assert "python3.11-venv" in line


@pytest.mark.parametrize("root", [True, False])
def test_chromium_found_is_named(box: Sandbox, root: bool) -> None:
    box.user(root=root)
    r = box.run(LAYERTIME_CHROMIUM="/opt/chrome/chromium")
    assert r.returncode == 0, r.stderr
    assert "setup: [4/4] Chromium, for the HTML report tests: /opt/chrome/chromium" in r.stdout


def test_chromium_missing_as_root_with_apt_is_installed_with_apt(box: Sandbox) -> None:
    box.apt()
    r = box.run()
    assert r.returncode == 0, r.stderr
    assert "only the HTML report tests need" in r.stdout
    assert _would_run(r.stdout)[-2:] == [
        "apt-get update", "env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"]


@pytest.mark.parametrize("root,apt", [(False, True), (False, False), (True, False)])
def test_chromium_missing_otherwise_is_one_note_not_a_failure(box: Sandbox, root: bool,
                                                             apt: bool) -> None:
    box.user(root=root)
    if apt:
        box.apt()
    r = box.run()
    assert r.returncode == 0, r.stderr
    # (A machine short of disk adds a note of its own, "setup: note: only N GB free ...".)
    notes = [ln for ln in r.stderr.splitlines() if ln.strip() and "GB free" not in ln]
    assert len(notes) == 1, r.stderr
    assert notes[0].startswith("setup: note: [4/4] Chromium is missing: only the HTML report tests")
    assert ("sudo apt-get install chromium" in notes[0]) == apt
    assert not any("apt-get" in c for c in _would_run(r.stdout))


def test_git_ignores_dot_venv_as_a_directory_and_as_a_link(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    subprocess.run([git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "python").write_text("")
    for venv in ("dir", "link"):
        target = tmp_path / ".venv"
        if venv == "dir":
            target.mkdir()
            (target / "python").write_text("")
        else:
            shutil.rmtree(target)
            target.symlink_to(tmp_path / "env")
        r = subprocess.run([git, "-C", str(tmp_path), "check-ignore", "-q", ".venv"])
        assert r.returncode == 0, f".venv as a {venv} is not ignored by .gitignore"
