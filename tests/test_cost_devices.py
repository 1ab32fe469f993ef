"""Device profiles: the built-in table and user TOML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from layertime.cost.devices import builtin_profiles, get_profile, load_profiles, parse_profiles
from layertime.errors import LayertimeError

REQUIRED = ("gtx580", "k40", "titanx-maxwell", "p100", "v100", "a100", "h100", "h200")


def test_builtin_table_has_the_required_devices_with_sources() -> None:
    table = builtin_profiles()
    assert set(REQUIRED) <= set(table)
    for key, p in table.items():
        assert p.key == key and p.source and p.name
        assert p.peak_tflops["fp32"] > 0 and p.memory_bandwidth_gb_per_s > 0


def test_tensor_core_peaks_where_devices_have_them() -> None:
    t = builtin_profiles()
    for key in ("a100", "h100", "h200"):
        assert {"tf32", "bf16", "fp16"} <= set(t[key].peak_tflops)
        assert t[key].peak_tflops["tf32"] > t[key].peak_tflops["fp32"]
    assert "fp16" in t["v100"].peak_tflops and "tf32" not in t["v100"].peak_tflops
    for key in ("gtx580", "k40", "titanx-maxwell"):
        assert set(t[key].peak_tflops) <= {"fp32", "fp64"}
    # A100 SXM4 80GB: 19.5 TFLOP/s FP32, 156 TF32, 312 BF16 (dense), 2039 GB/s
    a100 = t["a100"]
    assert (a100.peak_tflops["fp32"], a100.peak_tflops["tf32"], a100.peak_tflops["bf16"]) == (
        19.5, 156.0, 312.0
    )
    assert a100.memory_bandwidth_gb_per_s == 2039.0
    assert t["h200"].memory_bandwidth_gb_per_s > t["h100"].memory_bandwidth_gb_per_s


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(LayertimeError) as e:
        get_profile("a1000")
    msg = str(e.value)
    assert "unknown device profile 'a1000'" in msg and "did you mean a100" in msg
    for key in REQUIRED:
        assert key in msg


def test_names_are_case_insensitive() -> None:
    assert get_profile("A100").key == "a100"


GOOD = """\
# my devices
[devices.my-gpu]
name = "My GPU"
fp32_tflops = 30.0
bf16_tflops = 120
memory_bandwidth_gb_per_s = 900
memory_gb = 24

[devices.my-gpu.compute_efficiency]
conv = 0.5

[devices.a100]
fp32_tflops = 1.0
memory_bandwidth_gb_per_s = 10
memory_efficiency = 0.5
"""


def test_user_profiles_parse_and_override_builtins(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(GOOD)
    extra = load_profiles(path)
    mine = get_profile("my-gpu", extra)
    assert mine.name == "My GPU" and mine.peak_tflops == {"fp32": 30.0, "bf16": 120.0}
    assert mine.peak_flops_per_s("bf16") == 120e12 and mine.peak_flops_per_s("tf32") is None
    assert mine.compute_efficiency == {"conv": 0.5} and mine.memory_gb == 24
    assert str(path) in mine.source
    assert get_profile("a100", extra).peak_tflops == {"fp32": 1.0}
    assert get_profile("a100", extra).memory_efficiency == {"default": 0.5}
    assert get_profile("a100").peak_tflops["fp32"] == 19.5  # the built-in is untouched


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[devices.x]\nfp32_tflops = 1\nmemory_bandwidth_gb_per_s = = 2\n')
    with pytest.raises(LayertimeError) as e:
        load_profiles(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:3: not valid TOML") and "\n" not in msg


@pytest.mark.parametrize(
    "body, match, line",
    [
        # the header is line 3, the body starts on line 4
        ("fp32_tflops = 1", "missing memory_bandwidth_gb_per_s", 3),
        ("fp32_tflops = -1\nmemory_bandwidth_gb_per_s = 1", "fp32_tflops must be > 0", 4),
        ('memory_bandwidth_gb_per_s = 1\nfp32_tflops = "fast"', "must be a number", 5),
        ("fp32_tflop = 1\nmemory_bandwidth_gb_per_s = 1", "did you mean 'fp32_tflops'", 4),
        (
            "fp32_tflops = 1\nmemory_bandwidth_gb_per_s = 1\ncompute_efficiency = {conv = 1.5}",
            r"compute_efficiency.conv must be in \(0, 1\]",
            6,
        ),
        ("fp32_tflops = 1\nmemory_bandwidth_gb_per_s = 1\ninter_node_link_latency_us = 2",
         "inter_node_link_latency_us needs inter_node_link_gbps", 6),
        ("fp32_tflops = 1\nmemory_bandwidth_gb_per_s = 1\nintra_node_link_gbps = 0",
         "intra_node_link_gbps must be > 0", 6),
        (
            "fp32_tflops = 1\nmemory_bandwidth_gb_per_s = 1\n\n[devices.gpu.memory_efficiency]\n"
            "default = 0",
            r"memory_efficiency.default must be in \(0, 1\]",
            7,
        ),
    ],
)
def test_invalid_profile_names_file_line_and_field(body: str, match: str, line: int) -> None:
    text = "# header\n\n[devices.gpu]\n" + body + "\n"
    with pytest.raises(LayertimeError, match=match) as e:
        parse_profiles(text, "p.toml")
    assert str(e.value).startswith(f"p.toml:{line} [devices.gpu]: ")
    assert "\n" not in str(e.value)


def test_links_of_a_profile_for_the_sharded_what_if() -> None:
    text = ("[devices.box]\nfp32_tflops = 1\nmemory_bandwidth_gb_per_s = 1\n"
            "intra_node_link_gbps = 2400\ninter_node_link_gbps = 200\n"
            "inter_node_link_latency_us = 3\n")
    box = parse_profiles(text, "p.toml")["box"]
    assert box.intra_node_link is not None and box.inter_node_link is not None
    assert (box.intra_node_link.bandwidth_gbps, box.intra_node_link.latency_us) == (2400, 5.0)
    assert (box.inter_node_link.bandwidth_gbps, box.inter_node_link.latency_us) == (200, 3.0)
    # Built in: NVLink's datasheet total per GPU, half each way; no network card.
    h100 = get_profile("h100")
    assert h100.intra_node_link is not None and h100.intra_node_link.bandwidth_gbps == 3600
    assert h100.inter_node_link is None and get_profile("t4").intra_node_link is None


def test_file_without_devices_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LayertimeError, match="no \\[devices.NAME\\] tables"):
        parse_profiles("title = 'x'\n", "p.toml")
    with pytest.raises(LayertimeError, match="cannot read"):
        load_profiles(tmp_path / "missing.toml")
