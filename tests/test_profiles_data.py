"""The target profile data files (targets/profiles/*.toml) are complete and every number says where it comes from.

These files feed every estimate edgekit prints (memory fit, latency, energy); the report shows each number's source
next to the result, so a number without a source, or a missing key, would silently break that promise.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

PROFILE_DIR = Path(__file__).resolve().parents[1] / "targets" / "profiles"
EXPECTED = {"cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "phone-arm64", "phone-a53", "phone-armv9",
            "loihi2", "spinnaker2"}
BACKENDS = {"mcu", "phone", "neuromorphic"}  # edgekit.targets.TARGETS
QEMU_BOARDS = {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500", "cortex-m33": "mps2-an505",
               "cortex-m55": "mps3-an547"}

TOP_STRINGS = ("name", "backend", "description", "core", "device")
TOP_NUMBERS = ("clock_hz", "sram_bytes", "flash_bytes")
REQUIRED = {
    "mcu": {
        "energy": ("run_current_ua_per_mhz", "supply_v"),
        "cost": ("conv2d_int8", "depthwise_int8", "linear_int8", "conv2d_float32", "depthwise_float32",
                 "linear_float32", "rnn_float32", "rnn_int8", "elementwise_per_element"),
        "runtime": ("overhead_flash_bytes", "overhead_sram_bytes"),
    },
    "phone": {
        "energy": ("pj_per_mac_fp32", "pj_per_mac_int8"),
        "cost": ("macs_per_second_fp32", "macs_per_second_int8", "cpi"),
    },
    "neuromorphic": {
        "energy": ("pj_per_synop", "pj_per_neuron_update", "pj_mac_45nm", "pj_ac_45nm"),
        "neuromorphic": ("cores", "neurons_per_core", "timestep_s"),
    },
}


def _paths():
    return sorted(PROFILE_DIR.glob("*.toml"))


def _load(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _bare_numbers(node, where: str):
    """Every number in the file that is not the value of a { value, source } table, as 'where' strings."""
    if isinstance(node, dict):
        if "value" in node:
            return []
        found = []
        for k, v in node.items():
            found += _bare_numbers(v, f"{where}.{k}" if where else k)
        return found
    if isinstance(node, list):
        return [f"{where}[{i}]" for i, v in enumerate(node) if _is_number(v)] + \
            [w for i, v in enumerate(node) if not _is_number(v) for w in _bare_numbers(v, f"{where}[{i}]")]
    return [where] if _is_number(node) else []


def _sourced_tables(node, where: str = ""):
    """Every { value, source } table in the file, with its dotted path."""
    if isinstance(node, dict):
        if "value" in node:
            yield where, node
            return
        for k, v in node.items():
            yield from _sourced_tables(v, f"{where}.{k}" if where else k)


def test_every_expected_profile_exists():
    assert {p.stem for p in _paths()} >= EXPECTED


@pytest.mark.parametrize("path", _paths(), ids=lambda p: p.stem)
def test_profile_header(path):
    raw = _load(path)
    for key in TOP_STRINGS:
        assert isinstance(raw.get(key), str) and raw[key].strip(), f"{path.name}: '{key}' must be a non-empty string"
    assert raw["name"] == path.stem, f"{path.name}: name '{raw['name']}' must match the file name"
    assert raw["backend"] in BACKENDS, f"{path.name}: backend '{raw['backend']}' is not one of {sorted(BACKENDS)}"
    for key in TOP_NUMBERS:
        assert isinstance(raw.get(key), dict) and "value" in raw[key], f"{path.name}: '{key}' missing"


@pytest.mark.parametrize("path", _paths(), ids=lambda p: p.stem)
def test_every_number_carries_a_source(path):
    raw = _load(path)
    bare = _bare_numbers(raw, "")
    assert not bare, f"{path.name}: numbers without {{ value, source }}: {bare}"
    for where, table in _sourced_tables(raw):
        assert set(table) == {"value", "source"}, f"{path.name}: {where} has keys {sorted(table)}"
        assert _is_number(table["value"]), f"{path.name}: {where}.value must be a number"
        assert table["value"] >= 0, f"{path.name}: {where}.value must not be negative"
        assert isinstance(table["source"], str) and table["source"].strip(), f"{path.name}: {where} has no source"


@pytest.mark.parametrize("path", _paths(), ids=lambda p: p.stem)
def test_required_keys_for_backend(path):
    raw = _load(path)
    for section, keys in REQUIRED[raw["backend"]].items():
        table = raw.get(section, {})
        missing = [k for k in keys if k not in table]
        assert not missing, f"{path.name}: [{section}] is missing {missing}"
        for k in keys:
            assert table[k]["value"] > 0, f"{path.name}: [{section}] {k} must be positive"
    assert raw["sram_bytes"]["value"] > 0, f"{path.name}: sram_bytes must be positive"


@pytest.mark.parametrize("path", [p for p in _paths() if _load(p)["backend"] == "mcu"], ids=lambda p: p.stem)
def test_mcu_profiles_name_their_platform_and_qemu_board(path):
    from edgekit.targets.mcu.platforms import get_platform

    raw = _load(path)
    board = raw.get("board", {}).get("qemu_board")
    assert isinstance(board, str) and board, f"{path.name}: [board] qemu_board missing"
    platform = get_platform(raw["board"].get("platform"))
    assert board in platform.boards(), f"{path.name}: {platform.name} has no board {board}"
    if raw["name"] in QEMU_BOARDS:
        assert board == QEMU_BOARDS[raw["name"]], f"{path.name}: expected qemu_board {QEMU_BOARDS[raw['name']]}"
    assert raw["clock_hz"]["value"] > 0 and raw["flash_bytes"]["value"] > 0


@pytest.mark.parametrize("path", _paths(), ids=lambda p: p.stem)
def test_every_profile_is_served_by_a_target(path):
    """The core finds each profile's target in one registry (edgekit.targets.TARGETS) and talks to it only through
    the Target protocol."""
    from edgekit.targets import Target, get_profile, get_target

    profile = get_profile(path.stem)
    target = get_target(profile)
    assert isinstance(target, Target) and target.backend == profile.backend
    caps = target.capabilities(profile)
    assert caps.dtypes and set(caps.memories) <= {"sram", "flash"}


def test_an_unknown_backend_is_refused_in_one_line():
    import dataclasses

    from edgekit.errors import UsageError
    from edgekit.targets import get_profile, get_target

    odd = dataclasses.replace(get_profile("cortex-m7"), backend="fpga")
    with pytest.raises(UsageError, match="no target serves backend 'fpga'"):
        get_target(odd)
