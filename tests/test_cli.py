"""The ``layertime`` command, run as a real subprocess.

Every bad input must give a non-zero exit, exactly one stderr line starting
``layertime: error:`` and no traceback (unless ``--debug``).  Each subprocess
pays for importing torch, so all of them are started once, a few at a time in
parallel, by the module fixture ``cli``; the tests then only read the results.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from layertime.cli import main
from layertime.errors import LayertimeError

#: Every test reads the results of real `layertime` subprocesses (about a minute).
pytestmark = pytest.mark.slow

#: A guard against a hung child, not a speed requirement: the slowest case
#: takes seconds.
HANG_GUARD_S = 600
#: Address-space cap (bytes) for children that are asked for absurd batches,
#: so that even a machine that overcommits memory cannot let them fill RAM.
ADDRESS_SPACE_CAP = 12 * 2**30
HUGE_BATCH = 10**9

MODELS_PY = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


class NaNNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

    def forward(self, x):
        # (batch, classes) logits, every one NaN
        return self.conv(x).sum(dim=(2, 3)) * float("nan")


def build(num_classes=10):
    return Tiny(num_classes)


def build_nan(num_classes=10):
    return NaNNet(num_classes)


def not_a_module():
    return {"conv": 1}
'''

BROKEN_PY = '''
import torch


def build():
    return torch.nn.Linear(1, 1)


raise ValueError("broken on purpose")
'''


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return (
            f"layertime {' '.join(self.argv)} -> exit {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def _limit_address_space() -> None:  # runs in the child, before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))


def run_cli(
    *argv: str, cwd: Path, env: dict[str, str] | None = None, capped: bool = False
) -> Result:
    # Runs go to a private database, never the user's (module fixtures start
    # before any function-scoped fixture could set this).
    full_env = {**os.environ, "LAYERTIME_DB": str(cwd / "runs.db"), **(env or {})}
    preexec: Callable[[], None] | None = None
    if capped:
        if sys.platform != "linux":
            pytest.skip("the address-space cap needs Linux")
        preexec = _limit_address_space
        # Fewer threads and malloc arenas: less address space for the cap to count.
        full_env.update(OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    p = subprocess.run(
        [sys.executable, "-m", "layertime", *argv],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        preexec_fn=preexec,
    )
    return Result(tuple(argv), p.returncode, p.stdout, p.stderr)


def _success_then_show(cwd: Path) -> dict[str, Result]:
    ok = run_cli(
        "profile", "models.py:build", "--input-shape", "3,16,16", "--num-classes", "10",
        "--batch-size", "4", "--steps", "1", "--warmup", "0",
        "--json", "out.json", "--width", "120",
        cwd=cwd,
    )
    show = run_cli("show", "out.json", "--width", "120", cwd=cwd)
    return {"success": ok, "show": show}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "models.py").write_text(textwrap.dedent(MODELS_PY))
    (d / "broken.py").write_text(textwrap.dedent(BROKEN_PY))
    return d


@pytest.fixture(scope="module")
def cli(workdir: Path) -> dict[str, Result]:
    d = workdir
    jobs: dict[str, Callable[[], Result]] = {
        "unknown": lambda: run_cli("profile", "alexnett", cwd=d),
        "unknown_debug": lambda: run_cli("--debug", "profile", "alexnett", cwd=d),
        "no_file": lambda: run_cli("profile", "nope.py:build", cwd=d),
        "no_callable": lambda: run_cli("profile", "models.py:missing", cwd=d),
        "not_module": lambda: run_cli("profile", "models.py:not_a_module", cwd=d),
        "import_error": lambda: run_cli("profile", "broken.py:build", cwd=d),
        # The huge batch and many steps prove the tiny forward check runs first:
        # were the batch made or a step run before it, the error would be the
        # out-of-memory one instead.
        "bad_shape": lambda: run_cli(
            "profile", "alexnet", "--input-shape", "3,8,8", "--device", "cpu",
            "--batch-size", str(HUGE_BATCH), "--steps", "50",
            cwd=d, capped=True,
        ),
        # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on GPU machines too.
        "cuda": lambda: run_cli(
            "profile", "models.py:build", "--device", "cuda", "--input-shape", "3,16,16",
            cwd=d, env={"CUDA_VISIBLE_DEVICES": ""},
        ),
        "oom": lambda: run_cli(
            "profile", "models.py:build", "--device", "cpu", "--input-shape", "3,64,64",
            "--num-classes", "10", "--batch-size", str(HUGE_BATCH),
            cwd=d, capped=True,
        ),
        "batch_zero": lambda: run_cli("profile", "models.py:build", "--batch-size", "0", cwd=d),
        "shape_x": lambda: run_cli("profile", "models.py:build", "--input-shape", "3,x", cwd=d),
        "nan": lambda: run_cli(
            "profile", "models.py:build_nan", "--input-shape", "3,16,16", "--num-classes", "10",
            "--batch-size", "4", "--steps", "1", "--warmup", "0", "--width", "120",
            cwd=d,
        ),
        "show_missing": lambda: run_cli("show", "missing.json", cwd=d),
        "models": lambda: run_cli("models", cwd=d),
    }
    results: dict[str, Result] = {}
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1))) as pool:
        chain = pool.submit(_success_then_show, d)
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        results.update(chain.result())
        results.update({name: f.result() for name, f in futures.items()})
    return results


def assert_one_line_error(r: Result, exit_code: int | None = None) -> str:
    """The error contract; returns the message after the prefix."""
    assert r.returncode != 0, r
    if exit_code is not None:
        assert r.returncode == exit_code, r
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r
    assert lines[0].startswith("layertime: error: "), r
    return lines[0][len("layertime: error: ") :]


# -- bad model names and user code --------------------------------------------


def test_unknown_model_suggests_close_name(cli: dict[str, Result]) -> None:
    msg = assert_one_line_error(cli["unknown"], exit_code=2)
    assert "alexnett" in msg
    assert "did you mean alexnet" in msg, cli["unknown"]


def test_debug_shows_traceback(cli: dict[str, Result]) -> None:
    r = cli["unknown_debug"]
    assert r.returncode != 0, r
    assert "Traceback (most recent call last)" in r.stderr, r
    assert "BadValue" in r.stderr and "alexnett" in r.stderr, r


def test_debug_after_subcommand_raises_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    # "rerun with --debug" is naturally done by appending it to the command.
    with pytest.raises(LayertimeError, match="alexnett"):
        main(["profile", "alexnett", "--debug"])
    assert main(["profile", "alexnett"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("layertime: error: unknown model")


def test_missing_file(cli: dict[str, Result]) -> None:
    msg = assert_one_line_error(cli["no_file"], exit_code=1)
    assert "no such file" in msg and "nope.py" in msg


def test_missing_callable(cli: dict[str, Result]) -> None:
    msg = assert_one_line_error(cli["no_callable"], exit_code=1)
    assert "models.py" in msg and "'missing'" in msg


def test_callable_not_returning_module(cli: dict[str, Result]) -> None:
    msg = assert_one_line_error(cli["not_module"], exit_code=1)
    assert "dict" in msg and "nn.Module" in msg


def test_user_file_raising_on_import(cli: dict[str, Result]) -> None:
    msg = assert_one_line_error(cli["import_error"], exit_code=1)
    assert "broken.py" in msg
    assert "ValueError" in msg and "broken on purpose" in msg


# -- bad runs -----------------------------------------------------------------


def test_input_shape_the_model_cannot_take_fails_in_forward_check(
    cli: dict[str, Result],
) -> None:
    msg = assert_one_line_error(cli["bad_shape"], exit_code=1)
    assert "input shape 3x8x8 does not fit alexnet" in msg, cli["bad_shape"]
    assert "memory" not in msg, cli["bad_shape"]


def test_cuda_without_cuda(cli: dict[str, Result]) -> None:
    msg = assert_one_line_error(cli["cuda"], exit_code=2)
    assert "CUDA" in msg and "not available" in msg


def test_batch_that_does_not_fit_in_memory(cli: dict[str, Result]) -> None:
    msg = assert_one_line_error(cli["oom"], exit_code=1)
    assert f"batch {HUGE_BATCH} does not fit in cpu memory" in msg, cli["oom"]
    suggested = msg.rsplit("--batch-size", 1)[1].split()[0]
    assert 1 <= int(suggested) < HUGE_BATCH


@pytest.mark.parametrize(
    ("case", "flag"), [("batch_zero", "--batch-size"), ("shape_x", "--input-shape")]
)
def test_bad_argument_values_are_usage_errors(
    cli: dict[str, Result], case: str, flag: str
) -> None:
    msg = assert_one_line_error(cli[case], exit_code=2)
    assert flag in msg


def test_show_missing_file(cli: dict[str, Result]) -> None:
    msg = assert_one_line_error(cli["show_missing"], exit_code=1)
    assert "missing.json" in msg


# -- runs that complete -------------------------------------------------------


def test_nan_loss_completes_with_a_warning(cli: dict[str, Result]) -> None:
    r = cli["nan"]
    assert r.returncode == 0, r
    assert "Traceback" not in r.stderr, r
    warnings = [ln for ln in r.stdout.splitlines() if ln.startswith("warning:")]
    assert any("NaN" in ln for ln in warnings), r


def test_successful_run_prints_headline_and_table(cli: dict[str, Result], workdir: Path) -> None:
    r = cli["success"]
    assert r.returncode == 0, r
    assert "Traceback" not in r.stderr and "error" not in r.stderr.lower(), r
    data = json.loads((workdir / "out.json").read_text())
    flat = " ".join(r.stdout.split())
    assert " ".join(data["headline"].split()) in flat, r  # the headline may wrap
    assert r.stdout.splitlines()[0].startswith("conv layers:"), r
    for row in (
        "conv (1)", "fully connected (1)", "activation (1)", "pool (1)",
        "loss (step)", "zero_grad (step)", "unattributed (step)", "profiled step",
    ):
        assert row in r.stdout, (row, str(r))
    assert all(len(ln) <= 120 for ln in r.stdout.splitlines()), r
    assert "warning:" not in r.stdout


def test_successful_run_json(workdir: Path, cli: dict[str, Result]) -> None:
    assert cli["success"].returncode == 0, cli["success"]
    data = json.loads((workdir / "out.json").read_text())
    assert data["schema"] == "layertime.run/1"
    assert data["model"] == "models.py:build"
    assert (data["batch_size"], data["input_shape"], data["num_classes"]) == (4, [3, 16, 16], 10)
    assert (data["steps"], data["warmup_steps"]) == (1, 0)
    assert len(data["step_samples_s"]) == len(data["profiled_step_samples_s"]) == 1
    assert data["warnings"] == []

    layers = {row["name"]: row for row in data["layers"]}
    assert {"conv", "relu", "pool", "fc"} <= set(layers)
    kinds = {n: layers[n]["kind"] for n in ("conv", "relu", "pool", "fc")}
    assert kinds == {"conv": "conv", "relu": "activation", "pool": "pool", "fc": "linear"}
    assert layers["conv"]["params"] == 3 * 4 * 9 + 4
    assert layers["fc"]["params"] == 4 * 10 + 10
    assert data["params"] == sum(row["params"] for row in data["layers"]) == 162

    step = data["profiled_step_s"]
    assert step > 0
    phases = data["phases"]
    for row in data["layers"]:
        parts = (row["forward_s"], row["backward_s"], row["update_s"])
        assert all(t >= 0 for t in parts), row
        assert math.isclose(row["total_s"], sum(parts), rel_tol=1e-12, abs_tol=1e-15)
    total = sum(row["total_s"] for row in data["layers"]) + sum(
        phases[k] for k in ("loss_s", "zero_grad_s", "data_s", "unattributed_s")
    )
    assert math.isclose(total, step, rel_tol=1e-9, abs_tol=1e-12), (total, step)
    for k in ("forward_s", "backward_s", "update_s"):
        from_rows = sum(row[k] for row in data["layers"])
        assert math.isclose(from_rows, phases[k], rel_tol=1e-9, abs_tol=1e-12), k
    assert math.isclose(sum(v["share"] for v in data["kinds"].values()), 1.0, rel_tol=1e-9)


def test_show_renders_saved_run_like_profile(cli: dict[str, Result]) -> None:
    r = cli["show"]
    assert r.returncode == 0, r
    assert r.stderr == "", r
    # Same run, same width: the saved JSON renders exactly as the live run did.
    assert r.stdout == cli["success"].stdout, r


def test_models_lists_names(cli: dict[str, Result]) -> None:
    r = cli["models"]
    assert r.returncode == 0, r
    names = r.stdout.split()
    assert "alexnet2012" in names and "resnet50" in names and "alexnet" in names
    assert "hf:gpt2" in names and "hf:tinyllama-1.1b" in names  # listed without transformers
    assert names == sorted(names)
    assert len(names) == len(r.stdout.splitlines())  # one name a line


# -- the first five minutes: fast help, quiet pipes ---------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["profile", "--help"],
                                  ["cost", "--help"], ["models"], ["attribute", "--help"]])
def test_help_version_and_models_do_not_import_torch(argv: list[str]) -> None:
    code = (
        "import sys, contextlib, io\n"
        "from layertime.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules, 'torchvision' in sys.modules,\n"
        "      'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False False"


def test_a_closed_pipe_ends_quietly_with_status_0() -> None:
    # The reader has gone before the first line is written (as `| head -0` does).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run([sys.executable, "-m", "layertime", "models"], stdout=write_end,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert out.returncode == 0
    assert out.stderr == ""


def test_version_names_the_package() -> None:
    out = subprocess.run([sys.executable, "-m", "layertime", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("layertime ")


# -- errors that help -----------------------------------------------------------------------


def test_out_of_memory_is_one_whole_line_with_an_estimated_batch(capsys) -> None:
    from layertime.cost.count.memory import BatchFit, batch_that_fits, hint_text
    from layertime.errors import oom_detail
    from layertime.workload import WorkloadSpec

    torch_msg = ("CUDA out of memory. Tried to allocate 3.06 GiB. GPU 0 has a total capacity of "
                 "139.81 GiB of which 1.2 GiB is free. Including non-PyTorch memory, this process "
                 "has 138 GiB memory in use. Of the allocated memory 130 GiB is allocated by "
                 "PyTorch. If reserved but unallocated memory is large try setting "
                 "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.")
    detail = oom_detail(RuntimeError(torch_msg))
    assert detail == ("CUDA out of memory. Tried to allocate 3.06 GiB. GPU 0 has a total capacity "
                      "of 139.81 GiB of which 1.2 GiB is free")
    # The fit from the estimate: fixed + per-sample, exactly as estimated at batch 1 and 2.
    spec = WorkloadSpec.create("alexnet", batch_size=64, image_size=64, num_classes=10)
    fit = batch_that_fits(spec, 2 * 10**9)
    from layertime.cost import estimate_workload

    one = estimate_workload(dataclasses_replace(spec, batch_size=1)).memory_bytes.total
    assert fit.per_sample_bytes + fit.fixed_bytes == one
    assert fit.fixed_bytes + fit.batch_size * fit.per_sample_bytes <= 0.85 * 2 * 10**9
    assert fit.fixed_bytes + (fit.batch_size + 1) * fit.per_sample_bytes > 0.85 * 2 * 10**9
    text = hint_text(fit, 100_000)
    assert f"try --batch-size {fit.batch_size}" in text and "an estimate" in text
    assert "even batch 1" in hint_text(BatchFit(10, 10**9, 10**8, 0), 4)
    assert "something else holds memory: try --batch-size 2" in hint_text(
        BatchFit(10, 10, 10**9, 5000), 4)


def dataclasses_replace(obj, **kw):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(obj, **kw)


@pytest.mark.parametrize("argv", [
    ["sweep", "alexnet", "--batch-sizes", "4,abc"],
    ["profile", "alexnett"],
    ["cost", "alexnet", "--device-profile", "h2000"],
])
def test_bad_values_exit_2_with_one_line(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("layertime: error: ") and err.count("\n") == 1


def test_every_written_file_is_announced_and_quiet_silences_it(tmp_path, capsys) -> None:
    from layertime.cli.common import wrote

    import argparse

    path = tmp_path / "x.json"
    wrote(argparse.Namespace(quiet=False), path)
    wrote(argparse.Namespace(quiet=True), path)
    wrote(argparse.Namespace(), path)
    err = capsys.readouterr().err
    assert err == f"wrote {path}\nwrote {path}\n"
    # A real command: --json and --html each said once, on stderr, stdout untouched.
    out_json, out_html = tmp_path / "c.json", tmp_path / "c.html"
    assert main(["cost", "alexnet", "-b", "2", "--json", str(out_json), "--html", str(out_html),
                 "--no-store", "--width", "120"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"wrote {out_json}", f"wrote {out_html}"]
    assert "wrote" not in captured.out


def test_show_prints_a_stored_run_by_id(tmp_path, capsys) -> None:
    db = tmp_path / "runs.db"
    assert main(["cost", "alexnet", "-b", "2", "--db", str(db), "-q"]) == 0
    capsys.readouterr()
    assert main(["show", "1", "--db", str(db), "--width", "100"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("conv layers:") and "features.0" in out
    assert main(["show", "7", "--db", str(db)]) == 1  # no such run: one line
    assert capsys.readouterr().err.count("\n") == 1


def test_every_flag_has_help_and_shows_its_default() -> None:
    import argparse as ap

    from layertime.cli.parser import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, ap._SubParsersAction))
    assert subs.choices
    for name, sub in subs.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, ap._HelpAction) or action.help == ap.SUPPRESS:
                continue
            assert action.help, (name, action.option_strings or action.dest)
            default = action.default
            if action.option_strings and default not in (None, False, [], ap.SUPPRESS):
                # The default is printed, by the formatter or in the help's own words.
                shown = sub._get_formatter()._get_help_string(action)  # type: ignore[attr-defined]
                assert "default" in shown, (name, action.option_strings)
        assert "(default:" in text or name in ("models", "show", "compare", "report")
