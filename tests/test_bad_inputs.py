"""Every bad input a user can hand the ``edgekit`` command gets a clear answer (docs/errors.md).

What a user relies on: a mistake — a damaged or wrong model file, data of the wrong shape or holding NaN, operators a
target lacks, a model too large, a missing tool, firmware that hangs or faults, an existing OUT, Ctrl-C — ends in
exactly one line on stderr, ``edgekit: error: ...``, that names the file or layer and says what to do; the exit code
is the documented one for its class; there is no traceback (unless ``--debug``); and a failed or interrupted compile
leaves neither OUT nor a temporary ``.partial`` folder behind.

Most cases run ``edgekit.cli.main`` in-process; a few run ``.venv/bin/edgekit`` as a real process to check the exit
status the shell sees. The importer tests (tests/test_importers.py) check the same files through the Python API.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from edgekit import api
from edgekit.cli import main as cli_main
from edgekit.errors import ModelLoadError

from conftest import TinyCNN, make_tiny

EDGEKIT = Path(sys.executable).with_name("edgekit")
HAVE_ARM = all(shutil.which(t) for t in ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size",
                                         "qemu-system-arm", "gcc", "make"))
needs_arm = pytest.mark.skipif(not HAVE_ARM, reason="needs the Arm cross-compiler, qemu-system-arm, gcc and make")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models here are tiny: one thread runs them faster than several competing for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- the files a user might hand over --------------------------------------------------------------------------------

class BigLinear(nn.Module):
    """2.4 MB of float32 weights: over the 1 MiB flash of cortex-m4, but 0.6 MB in int8 fits."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 8192)
        self.fc2 = nn.Linear(8192, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class WideConv(nn.Module):
    """A 64x64 image with 32 channels: 512 KiB of float activations, over the 128 KiB SRAM of cortex-m4."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


class GruSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(1, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        out, _ = self.gru(x)
        return torch.softmax(self.fc(out[:, -1]), dim=-1)


def _export(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    torch.manual_seed(0)
    torch.export.save(torch.export.export(module.eval(), (torch.rand((1,) + shape),)), str(path))
    return path


def _onnx(path: Path, nodes, inits=(), x_shape=(1, 4), y_shape=None) -> Path:
    graph = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape or x_shape)],
                              list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Good and bad model files and calibration data, written once."""
    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    tiny = TinyCNN()
    _export(tiny, (1, 8, 8), d / "tiny.pt2")
    with torch.no_grad():
        tiny.fc.weight[3, 5] = float("nan")
    _export(tiny, (1, 8, 8), d / "nan_weights.pt2")
    _export(BigLinear(), (1, 8, 8), d / "big.pt2")
    _export(WideConv(), (3, 64, 64), d / "wide.pt2")
    _export(GruSoftmax(), (5, 1), d / "gru.pt2")
    _onnx(d / "relu.onnx", [helper.make_node("Relu", ["x"], ["y"], name="relu")])
    weight = np.ones((3, 4), np.float32)
    weight[1, 2] = np.inf
    _onnx(d / "inf_weights.onnx", [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)],
          [numpy_helper.from_array(weight, "w")], y_shape=(1, 3))
    _onnx(d / "ops.onnx", [helper.make_node("Erf", ["x"], ["a"], name="erf_1"),
                           helper.make_node("Relu", ["a"], ["b"], name="fine"),
                           helper.make_node("Selu", ["b"], ["y"], name="selu")])
    _onnx(d / "dynamic.onnx", [helper.make_node("Relu", ["x"], ["y"], name="r")], x_shape=("N", "steps", 3))
    pt2, onnx_bytes = (d / "tiny.pt2").read_bytes(), (d / "relu.onnx").read_bytes()
    (d / "truncated.pt2").write_bytes(pt2[:len(pt2) // 2])
    (d / "truncated.onnx").write_bytes(onnx_bytes[:len(onnx_bytes) // 2])
    (d / "picture.onnx").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    with zipfile.ZipFile(d / "archive.pt2", "w") as z:
        z.writestr("notes.txt", "a zip file, but no exported program")
    (d / "empty.onnx").write_bytes(b"")
    (d / "folder.pt2").mkdir()
    rng = np.random.default_rng(0)
    np.save(d / "calib.npy", rng.random((8, 1, 8, 8), dtype=np.float32))
    np.save(d / "calib_shape.npy", rng.random((8, 3, 8, 8), dtype=np.float32))
    np.save(d / "calib_empty.npy", np.zeros((0, 1, 8, 8), np.float32))
    for name, value in (("nan", np.nan), ("inf", -np.inf)):
        x = rng.random((8, 1, 8, 8), dtype=np.float32)
        x[5, 0, 3, 3] = value
        np.save(d / f"calib_{name}.npy", x)
    np.save(d / "calib_text.npy", np.full((8, 1, 8, 8), "abc"))
    np.save(d / "calib_objects.npy", np.array([{"x": 1}] * 8, dtype=object), allow_pickle=True)
    np.savez(d / "calib_nothing.npz")
    return d


# ---- running the command ---------------------------------------------------------------------------------------------

def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``edgekit ARGV`` run in-process."""
    capsys.readouterr()
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *names: str) -> str:
    """stderr is exactly one line ``edgekit: error: ...`` naming every one of ``names``; returns the line."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgekit: error: "), err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def assert_nothing_left(folder: Path, *keep: str) -> None:
    """No OUT and no temporary .partial/.old folder in ``folder`` besides ``keep``."""
    left = sorted(p.name for p in folder.iterdir() if p.name not in keep)
    assert left == [], left


def _fail(argv, capsys, code: int, *names: str) -> str:
    got, _, err = run_cli(argv, capsys)
    line = assert_one_error_line(err, *names)
    assert got == code, (got, line)
    return line


# ---- model files -----------------------------------------------------------------------------------------------------

# case -> (argv after "analyze" with {d} the files folder, exit code, words the message must hold)
MODEL_FILES = {
    "truncated .pt2": (["{d}/truncated.pt2"], 3, ["truncated.pt2", "re-export"]),
    "truncated .onnx": (["{d}/truncated.onnx"], 3, ["truncated.onnx", "not a valid ONNX model", "re-export"]),
    "PNG bytes named .onnx": (["{d}/picture.onnx"], 3, ["picture.onnx", "not a valid ONNX model"]),
    "zip named .pt2": (["{d}/archive.pt2"], 3, ["archive.pt2", "not a torch.export program"]),
    "empty file": (["{d}/empty.onnx"], 3, ["empty.onnx", "empty"]),
    "missing path": (["{d}/nowhere/model.pt2"], 3, ["nowhere/model.pt2", "no such file"]),
    "folder": (["{d}/folder.pt2"], 3, ["folder.pt2", "is a folder"]),
    "--input-shape wrong for .onnx": (["{d}/relu.onnx", "--input-shape", "3,8,8"], 4,
                                      ["relu.onnx", "--input-shape [3, 8, 8]", "input 'x'"]),
    "--input-shape wrong for .pt2": (["{d}/tiny.pt2", "--input-shape", "3,8,8"], 4, ["tiny.pt2", "--input-shape"]),
    "--input-shape not numbers": (["{d}/relu.onnx", "--input-shape", "a,b"], 2, ["--input-shape a,b"]),
    "NaN in .pt2 weights": (["{d}/nan_weights.pt2"], 5, ["fc.weight", "NaN or Inf"]),
    "Inf in .onnx weights": (["{d}/inf_weights.onnx"], 5, ["inf_weights.onnx", "'fc'", "NaN or Inf"]),
    "unsupported ONNX operators": (["{d}/ops.onnx"], 6, ["ops.onnx", "'erf_1' (Erf)", "'selu' (Selu)"]),
    "dynamic ONNX dimension": (["{d}/dynamic.onnx"], 6, ["dynamic.onnx", "dynamic dimension 'steps'",
                                                          "--input-shape"]),
}


@pytest.mark.parametrize("case", MODEL_FILES)
def test_bad_model_file(case, files, capsys):
    args, code, names = MODEL_FILES[case]
    line = _fail(["analyze"] + [a.format(d=files) for a in args], capsys, code, *names)
    assert "'fine'" not in line  # only the refused layers are named


# ---- calibration data (compile --quantize int8 --calib FILE) ---------------------------------------------------------

CALIBRATION = {
    "wrong shape": ("calib_shape.npy", 4, ["calib_shape.npy", "(8, 3, 8, 8)", "(N, 1, 8, 8)"]),
    "text instead of numbers": ("calib_text.npy", 4, ["calib_text.npy", "must be real numbers"]),
    "empty set": ("calib_empty.npy", 5, ["calib_empty.npy", "empty"]),
    "NaN values": ("calib_nan.npy", 5, ["calib_nan.npy", "NaN or Inf"]),
    "Inf values": ("calib_inf.npy", 5, ["calib_inf.npy", "NaN or Inf"]),
    "pickled objects": ("calib_objects.npy", 5, ["calib_objects.npy", "cannot read calibration data"]),
    ".npz without arrays": ("calib_nothing.npz", 5, ["calib_nothing.npz", "holds no arrays"]),
    "missing file": ("no_such_calib.npy", 5, ["no_such_calib.npy", "no such calibration file"]),
}


@pytest.mark.parametrize("case", CALIBRATION)
def test_bad_calibration_data(case, files, tmp_path, capsys):
    name, code, names = CALIBRATION[case]
    _fail(["compile", files / "tiny.pt2", "-t", "cortex-m7", "--quantize", "int8", "--calib", files / name,
           "-o", tmp_path / "out"], capsys, code, *names)
    assert_nothing_left(tmp_path)


# ---- what a target cannot do -----------------------------------------------------------------------------------------

def test_unsupported_layers_are_listed_at_once_with_the_target_that_runs_them(files, tmp_path, capsys):
    # The GRU runs on Cortex-M as a streaming step function; the softmax after it does not.
    _fail(["compile", files / "gru.pt2", "-t", "cortex-m7", "-o", tmp_path / "out"], capsys, 6,
          "1 layer(s) cannot run on cortex-m7", "'softmax'", "phone-arm64 (the phone target) runs them")
    assert_nothing_left(tmp_path)


def test_elementwise_products_compile_in_int8(tmp_path, capsys):
    """x * sigmoid(x) was refused in int8 on Cortex-M ("runs it in float32"); int8 products now run (the zoo's
    squeeze-excite needed them), so the file compiles and nothing is refused."""
    from edgekit.cli import main

    class Gate(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    _export(Gate(), (8,), tmp_path / "gate.pt2")
    np.save(tmp_path / "calib.npy", np.ones((4, 8), np.float32))
    assert main(["compile", str(tmp_path / "gate.pt2"), "-t", "cortex-m7", "--quantize", "int8", "--calib",
                 str(tmp_path / "calib.npy"), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.json").is_file()


def test_model_too_large_says_by_how_much_and_what_helps(files, tmp_path, capsys):
    line = _fail(["compile", files / "big.pt2", "-t", "cortex-m4", "-o", tmp_path / "out"], capsys, 7,
                 "'big' does not fit cortex-m4", "flash: needs", "B over", "--quantize int8 (estimate: flash",
                 "fits)", "--prune 0.5 --structured", "--allow-oversize")
    assert "SRAM: needs" not in line  # only the memories that overflow
    assert_nothing_left(tmp_path)


def test_activations_too_large_suggest_patching(files, tmp_path, capsys):
    _fail(["compile", files / "wide.pt2", "-t", "cortex-m4", "--patch", "off", "-o", tmp_path / "out"], capsys, 7,
          "SRAM: needs", "B over", "--patch auto", "--quantize int8")
    assert_nothing_left(tmp_path)


def test_existing_out_is_refused_and_kept(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    _fail(["compile", files / "tiny.pt2", "-t", "cortex-m7", "-o", out], capsys, 2, str(out), "--force")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert_nothing_left(tmp_path, "out")


def test_debug_shows_the_traceback_instead(files):
    with pytest.raises(ModelLoadError, match="truncated.pt2"):
        cli_main(["--debug", "analyze", str(files / "truncated.pt2")])


# ---- tools and firmware ----------------------------------------------------------------------------------------------

def path_without(folder: Path, *prefixes: str) -> str:
    """A PATH holding every program of the current PATH except those whose names start with ``prefixes``."""
    folder.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            link = folder / entry.name
            if not entry.name.startswith(prefixes) and not link.exists() and os.access(entry.path, os.X_OK):
                link.symlink_to(entry.path)
    return str(folder)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A Cortex-M7 int8 build of a small model, firmware included, to copy and damage."""
    out = tmp_path_factory.mktemp("built") / "m7"
    if HAVE_ARM:
        api.compile(make_tiny(n=2), "cortex-m7", out, quantize="int8")
    return out


@needs_arm
def test_missing_cross_compiler_still_writes_sources_then_profile_says_how_to_install(files, tmp_path, capsys,
                                                                                      monkeypatch):
    monkeypatch.setenv("PATH", path_without(tmp_path / "bin", "arm-none-eabi-"))
    out = tmp_path / "out"
    code, stdout, err = run_cli(["compile", files / "tiny.pt2", "-t", "cortex-m7", "-o", out], capsys)
    assert code == 0 and err == ""
    assert "arm-none-eabi-gcc not found" in stdout and "apt-get install" in stdout.replace("\n", " ")
    for f in ("src/edgekit_model.c", "src/edgekit_weights.c", "src/edgekit_kernels.c", "firmware/main.c",
              "firmware/Makefile", "report.json", "report.html"):
        assert (out / f).is_file(), f
    assert not (out / "firmware" / "firmware.elf").exists()
    assert_nothing_left(tmp_path, "out", "bin")
    _fail(["profile", out], capsys, 8, "firmware.elf", "no firmware was built", "apt-get install",
          "gcc-arm-none-eabi")


@needs_arm
def test_missing_qemu_is_a_toolchain_error_with_the_apt_line(built, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m7"
    shutil.copytree(built, out)
    monkeypatch.setenv("PATH", path_without(tmp_path / "bin", "qemu-system-"))
    _fail(["profile", out], capsys, 8, "qemu-system-arm not found", "sudo apt-get install", "qemu-system-arm")


def _rebuild_with(out: Path, statement: str) -> None:
    """Put ``statement`` at the start of the firmware's main() and rebuild firmware.elf with OUT's own Makefile."""
    main_c = out / "firmware" / "main.c"
    source = main_c.read_text()
    assert "int main(void)\n{\n" in source
    main_c.write_text(source.replace("int main(void)\n{\n", "int main(void)\n{\n    " + statement + "\n", 1))
    (out / "firmware" / "firmware.elf").unlink()
    subprocess.run(["make", "-s", "-C", str(out / "firmware"), "firmware.elf"], check=True, capture_output=True)


@needs_arm
def test_hanging_firmware_is_stopped_at_the_time_limit(built, tmp_path, capsys):
    out = tmp_path / "m7"
    shutil.copytree(built, out)
    _rebuild_with(out, 'ek_puts("about to hang"); for (;;) { __asm__ volatile ("nop"); }')
    start = time.monotonic()
    _fail(["profile", out, "--time-limit", "2"], capsys, 9, "did not finish within 2 s", "firmware.elf",
          "longer time limit", "about to hang")
    assert time.monotonic() - start < 30
    assert not subprocess.run(["pgrep", "-f", str(out)], capture_output=True).stdout  # QEMU was killed


@needs_arm
def test_faulting_firmware_names_the_fault_and_where(built, tmp_path, capsys):
    out = tmp_path / "m7"
    shutil.copytree(built, out)
    _rebuild_with(out, '__asm__ volatile ("udf #7");')
    _fail(["profile", out, "--time-limit", "20"], capsys, 9, "firmware faulted", "UNDEFINSTR", "in main()")


# ---- the exit status a shell sees ------------------------------------------------------------------------------------

def test_exit_status_of_the_installed_command(files, tmp_path):
    """Real processes, run side by side: the status the shell sees, one line on stderr, nothing on stdout."""
    existing = tmp_path / "existing"
    existing.mkdir()
    runs = {3: ["analyze", files / "truncated.onnx"],
            2: ["compile", files / "tiny.pt2", "-t", "cortex-m7", "-o", existing],
            4: ["compile", files / "tiny.pt2", "-t", "cortex-m7", "--quantize", "int8",
                "--calib", files / "calib_shape.npy", "-o", tmp_path / "out"]}
    procs = {code: subprocess.Popen([str(EDGEKIT)] + [str(a) for a in argv], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for code, argv in runs.items()}
    for code, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == code, (code, stderr)
        assert_one_error_line(stderr)
        assert stdout == ""
    assert_nothing_left(tmp_path, "existing")


def test_interrupted_compile_leaves_nothing(files, tmp_path):
    """SIGINT while compile writes into its temporary folder: exit 130, no OUT, no .partial folder."""
    out = tmp_path / "out"
    held = tmp_path.parent / f"{tmp_path.name}.held"  # outside tmp_path: assert_nothing_left checks that folder
    # The compile writes OUT into its temporary folder, then holds there until the signal comes (api._hold_for_tests):
    # the interrupt lands mid-build however slow or busy the machine is.
    env = {**os.environ, "EDGEKIT_TEST_HOLD_BEFORE_COMMIT": str(held)}
    # SIGINT as a terminal would deliver it, even when the suite itself runs as a background job (which starts with
    # SIGINT ignored, and a child inherits that)
    proc = subprocess.Popen([str(EDGEKIT), "compile", str(files / "tiny.pt2"), "-t", "cortex-m7", "--quantize",
                             "int8", "--calib", str(files / "calib.npy"), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not held.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"compile ended before it held: {proc.communicate()}"
    assert list(tmp_path.glob(".out.*.partial/src/*")), "the held compile has written its sources"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert_one_error_line(stderr, "interrupted")
    assert_nothing_left(tmp_path)
