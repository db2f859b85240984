"""C sources of a Cortex-M build, rendered from the templates in templates/.

Where it sits: the Cortex-M target calls :func:`write_sources` with a planned Program (program.py) and the C that TVM
generated for its kernels. Output layout in OUT:

* ``src/``       the model, ready to drop into a firmware project: edgekit_model.{h,c} (driver + API),
                 edgekit_weights.{h,c} (const arrays), edgekit_kernels.c (TVM), ek_nn_s8.{h,c} (edgekit's int8
                 micro-kernels, when used), include/ (the few TVM/DLPack headers the kernels include)
* ``firmware/``  the test firmware for the emulated board: main.c, edgekit_testdata.{h,c}, board support, link.ld,
                 Makefile
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from edgekit import __version__
from edgekit.targets.mcu.program import DTYPE_BYTES, DTYPE_C, Program, root_of

TEMPLATES = Path(__file__).parent / "templates"
KERNELS_DIR = Path(__file__).parent / "platforms" / "cortex_m" / "kernels"
DL_CODES = {"int8": ("kDLInt", 8), "int16": ("kDLInt", 16), "int32": ("kDLInt", 32), "uint8": ("kDLUInt", 8),
            "float32": ("kDLFloat", 32)}
# The TVM headers edgekit_kernels.c includes, copied from the installed TVM so that src/ builds on its own.
TVM_HEADERS = (("tvm_ffi", "tvm/ffi/c_api.h"), ("tvm_ffi", "tvm/ffi/extra/c_env_api.h"),
               ("tvm_ffi", "dlpack/dlpack.h"), ("tvm", "tvm/runtime/base.h"), ("tvm", "tvm/runtime/c_backend_api.h"))


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def c_ident(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def c_values(data: np.ndarray, per_line: int = 16) -> str:
    flat = data.ravel()
    if data.dtype == np.float32:
        items = [f"{float(v)!r}f" if np.isfinite(v) else "0.0f" for v in flat]
        items = [s.replace("inf", "0") for s in items]
    else:
        items = [str(int(v)) for v in flat]
    lines = ["    " + ", ".join(items[i:i + per_line]) + "," for i in range(0, len(items), per_line)]
    return "\n".join(lines) if lines else "    0"


def copy_call(prog: Program, s) -> str:
    """C for copying a tile buffer into its place (row, col) in the full NHWC tensor."""
    src, dst = prog.tensors[s.inputs[0]], prog.tensors[s.output]
    bpe = DTYPE_BYTES[prog.dtype]
    _, h, w, c = src.shape
    _, _, full_w, _ = dst.shape
    dst_off = dst.offset + (s.params["row"] * full_w + s.params["col"]) * c * bpe
    return (f"ek_copy_window(ek_arena + {dst_off}, {full_w * c * bpe}u, ek_arena + {src.offset}, {w * c * bpe}u, "
            f"{h}u, {w * c * bpe}u)")


@dataclass
class Sources:
    src_dir: Path
    firmware_dir: Path
    model_sources: list[Path]
    include_dirs: list[Path]
    tvm_symbols: list[str]


def tvm_include_root(package: str) -> Path:
    import importlib

    mod = importlib.import_module(package)
    return Path(mod.__file__).parent / "include"


def copy_tvm_headers(dest: Path) -> None:
    for package, rel in TVM_HEADERS:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tvm_include_root(package) / rel, target)


def copy_kernel_library(src: Path, stem: str) -> Path:
    """Copy one of edgekit's kernel libraries (``kernels/<stem>.h`` and ``.c``) into ``src``; returns the .c."""
    for ext in (".h", ".c"):
        shutil.copyfile(KERNELS_DIR / f"{stem}{ext}", src / f"{stem}{ext}")
    return src / f"{stem}.c"


def write_sources(prog: Program, kernels_c: str, symbols: dict[int, str], out: Path, cpu: str) -> Sources:
    """Render the model sources into ``out/src``. ``symbols`` maps a step index to its TVM kernel symbol."""
    env = _env()
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    uses_ek = any(s.kind.startswith("ek_") for s in prog.steps)

    # Constants.
    cnames = {name: f"ek_c{i}_{c_ident(name)}"[:60] for i, name in enumerate(prog.consts)}
    consts = [{"name": c.name, "cname": cnames[c.name], "ctype": DTYPE_C[str(c.data.dtype)], "count": max(c.data.size, 1),
               "shape": "x".join(map(str, c.data.shape)), "dtype": str(c.data.dtype), "body": c_values(c.data)}
              for c in prog.consts.values()]

    # DLTensor descriptors for the TVM kernels.
    dl_index: dict[tuple[str, tuple], int] = {}
    dltensors = []

    ext_tensors = []  # the model input read in place: its data pointer is set at run time

    def dl(name: str, shape: tuple, is_const: bool) -> str:
        if not is_const and prog.tensors[name].external:
            t = prog.tensors[name]
            if not ext_tensors:
                code, bits = DL_CODES[t.dtype]
                ext_tensors.append({"data": "0", "shape": [int(v) for v in shape], "code": code, "bits": bits,
                                    "comment": f"{name} (model input, read in place)"})
            return "EK_TX(0)"
        key = (name, tuple(shape))
        if key not in dl_index:
            if is_const:
                c = prog.consts[name]
                data, dtype, comment = cnames[name], str(c.data.dtype), f"const {name}"
            else:
                t = prog.tensors[name]
                data = f"ek_arena + {t.offset}"
                dtype, comment = t.dtype, f"{name} @ arena+{t.offset}"
            code, bits = DL_CODES[dtype]
            dl_index[key] = len(dltensors)
            dltensors.append({"data": data, "shape": [int(s) for s in shape], "code": code, "bits": bits,
                              "comment": comment})
        return f"EK_T({dl_index[key]})"

    steps, ek_steps = [], []
    ek_calls = None  # micro-kernel calls and their (shared) parameter structs, rendered once
    for i, s in enumerate(prog.steps):
        if s.kind == "tvm":
            args = [dl(x, prog.tensors[x].shape, False) for x in s.inputs]
            args += [dl(c, prog.consts[c].data.shape, True) for c in s.consts]
            args.append(dl(s.output, prog.tensors[s.output].shape, False))
            steps.append({"layer": s.layer, "kind": "tvm", "what": f"TVM {s.spec.op}", "symbol": symbols[i],
                          "args": args})
        elif s.kind == "copy":
            steps.append({"layer": s.layer, "kind": "copy", "what": "tile into the full tensor",
                          "call": copy_call(prog, s)})
        else:
            from edgekit.targets.mcu import ek_kernels

            if ek_calls is None:
                ek_calls = ek_kernels.render_calls(prog, cnames)
            call, struct = ek_calls[i]
            steps.append({"layer": s.layer, "kind": s.kind, "what": s.kind, "call": call})
            if struct is not None:
                ek_steps.append(struct)

    inp, outp = prog.tensors[prog.input], prog.tensors[prog.output]
    common = {"model_name": prog.name, "cpu": cpu, "dtype": prog.dtype, "version": __version__, "uses_ek": uses_ek,
              "ctype": DTYPE_C[prog.dtype]}
    (src / "edgekit_model.h").write_text(env.get_template("edgekit_model.h.j2").render(
        **common, arena_bytes=prog.arena_bytes, input_bytes=inp.nbytes, output_bytes=outp.nbytes,
        input_shape=list(inp.shape), output_shape=list(outp.shape),
        input_layout="NHWC" if len(inp.shape) == 4 else "as in PyTorch",
        input_q=prog.input_q or (1.0, 0), output_q=prog.output_q or (1.0, 0),
        input_in_place=prog.tensors[prog.input].external))
    tvm_symbols = sorted(set(symbols.values()))
    (src / "edgekit_model.c").write_text(env.get_template("edgekit_model.c.j2").render(
        **common, steps=steps, ek_steps=ek_steps, dltensors=dltensors, tvm_symbols=tvm_symbols,
        ext_tensors=ext_tensors, input_in_place=prog.tensors[prog.input].external,
        uses_copy=any(s.kind == "copy" for s in prog.steps),
        arena_bytes=prog.arena_bytes, input_offset=prog.tensors[root_of(prog, prog.input)].offset,
        output_offset=prog.tensors[root_of(prog, prog.output)].offset))
    (src / "edgekit_weights.h").write_text(env.get_template("edgekit_weights.h.j2").render(
        **common, consts=consts, const_bytes=prog.const_bytes))
    (src / "edgekit_weights.c").write_text(env.get_template("edgekit_weights.c.j2").render(
        **common, consts=consts, const_bytes=prog.const_bytes))
    (src / "edgekit_kernels.c").write_text(kernels_c)
    copy_tvm_headers(src / "include")
    model_sources = [src / "edgekit_model.c", src / "edgekit_weights.c", src / "edgekit_kernels.c"]
    if uses_ek:
        model_sources.append(copy_kernel_library(src, "ek_nn_s8"))
    if any(s.kind in ("ek_sconv", "ek_sfc") for s in prog.steps):  # pruned layers stored compressed
        model_sources.append(copy_kernel_library(src, "ek_sparse_s8"))
    return Sources(src, out / "firmware", model_sources, [src, src / "include"], tvm_symbols)


def write_firmware(prog: Program, sources: Sources, test_inputs: np.ndarray, board: str, cflags: list[str],
                   ldflags: list[str], qemu_machine: str, stack_bytes: int) -> list[Path]:
    """The harness, test data, board support and Makefile in ``firmware/``; returns the firmware's own sources."""
    from edgekit.targets.mcu.platforms.cortex_m.board import write_board_support

    env = _env()
    fw = sources.firmware_dir
    fw.mkdir(parents=True, exist_ok=True)
    support = write_board_support(board, fw, stack_bytes=stack_bytes)
    ctype = DTYPE_C[prog.dtype]
    rows = [c_values(x, per_line=10 ** 9).strip().rstrip(",") for x in test_inputs]
    common = {"model_name": prog.name, "version": __version__, "board": board, "n_tests": len(test_inputs),
              "ctype": ctype, "input_elems": int(test_inputs[0].size)}
    (fw / "edgekit_testdata.h").write_text(env.get_template("edgekit_testdata.h.j2").render(**common))
    (fw / "edgekit_testdata.c").write_text(env.get_template("edgekit_testdata.c.j2").render(**common, rows=rows))
    (fw / "main.c").write_text(env.get_template("main.c.j2").render(**common))
    firmware_sources = [fw / "main.c", fw / "edgekit_testdata.c"] + list(support.sources)
    rel = lambda p: str(Path("..") / p.relative_to(fw.parent)) if fw.parent in p.parents else p.name  # noqa: E731
    uses_ek = any(s.kind.startswith("ek_") for s in prog.steps)
    from edgekit.targets.mcu.toolchain import OPT_FLAGS

    # The flags edgekit builds with (toolchain.py): the DSP kernels' inline assembly needs the optimizer.
    (fw / "Makefile").write_text(env.get_template("Makefile.j2").render(
        model_name=prog.name, version=__version__, cpu=board, board=board, uses_ek=uses_ek,
        cflags=cflags + OPT_FLAGS + ["-I../src", "-I../src/include", "-I."], ldflags=ldflags,
        model_sources=[rel(p) for p in sources.model_sources],
        firmware_sources=[p.name for p in firmware_sources], qemu_machine=qemu_machine))
    return firmware_sources
