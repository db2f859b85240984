"""C sources of an MCU build, rendered from the one template set in templates/.

Where it sits: the MCU pipeline (pipeline.py) calls :func:`write_sources` with a planned program — a one-shot
:class:`~edgekit.targets.mcu.program.Program` or a streaming
:class:`~edgekit.targets.mcu.streaming.StepProgram` (``prog.streaming``) — and the C that TVM generated for its
kernels, then :func:`write_firmware` for the emulator's test firmware. Output layout in OUT:

* ``src/``       the model, ready to drop into a firmware project: edgekit_model.{h,c} (driver + API: invoke for a
                 one-shot model, reset/step for a streaming one), edgekit_weights.{h,c} (const arrays),
                 edgekit_kernels.c (TVM), edgekit's int8 kernel libraries the program calls (the platform's
                 ``kernel_sources``), include/ (the few TVM/DLPack headers the kernels include)
* ``firmware/``  the test firmware for the emulated board: main.c, edgekit_testdata.{h,c}, the platform's board
                 support, link.ld, Makefile
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


def copy_window(prog: Program, s) -> tuple[int, int, int, int, int, int]:
    """A tile buffer's copy into its place (row, col) in the full NHWC tensor, or (``crop_row``, ``crop_col``) a
    window of the source into the whole output: (destination offset in the arena, destination row bytes, source
    offset, source row bytes, rows, bytes per row)."""
    src, dst = prog.tensors[s.inputs[0]], prog.tensors[s.output]
    bpe = DTYPE_BYTES[prog.dtype]
    if "crop_row" in s.params:  # the other way round: the window at (crop_row, crop_col) of the source, all of dst
        _, h, w, c = dst.shape
        full_w = src.shape[2]
        src_off = src.offset + (s.params["crop_row"] * full_w + s.params["crop_col"]) * c * bpe
        return dst.offset, w * c * bpe, src_off, full_w * c * bpe, h, w * c * bpe
    _, h, w, c = src.shape
    _, _, full_w, _ = dst.shape
    dst_off = dst.offset + (s.params["row"] * full_w + s.params["col"]) * c * bpe
    return dst_off, full_w * c * bpe, src.offset, w * c * bpe, h, w * c * bpe


def copy_call(prog: Program, s) -> str:
    """C for copying a tile buffer into its place (row, col) in the full NHWC tensor."""
    dst_off, dst_row, src_off, src_row, rows, row_bytes = copy_window(prog, s)
    return (f"ek_copy_window(ek_arena + {dst_off}, {dst_row}u, ek_arena + {src_off}, {src_row}u, "
            f"{rows}u, {row_bytes}u)")


def blocks_call(prog: Program, s) -> str:
    """C for a DCR depth_to_space of an NHWC map [H, W, r_h·r_w·C]: per input row and phase row i, its W blocks of
    r_w·C values (at the input pixel stride) side by side in output row h·r_h + i."""
    src, dst = prog.tensors[s.inputs[0]], prog.tensors[s.output]
    bpe = DTYPE_BYTES[prog.dtype]
    rh, rw = s.params["block"]
    _, h, w, cin = src.shape
    blk = cin // rh * bpe  # r_w·C values
    out_row = w * blk
    return (f"for (uint32_t ek_r = 0u; ek_r < {h * rh}u; ++ek_r) "
            f"ek_copy_window(ek_arena + {dst.offset}u + ek_r * {out_row}u, {blk}u, "
            f"ek_arena + {src.offset}u + (ek_r / {rh}u) * {w * cin * bpe}u + (ek_r % {rh}u) * {blk}u, "
            f"{cin * bpe}u, {w}u, {blk}u)")


def pad_window(prog: Program, s) -> tuple[int, int, int, int, int, int]:
    """Where a pad step copies its input: (destination offset, destination row bytes, source offset, source row
    bytes, rows, bytes per row) — an NHWC map's rows inside the padded one, or [1, C, L]'s channel rows."""
    src, dst = prog.tensors[s.inputs[0]], prog.tensors[s.output]
    bpe = DTYPE_BYTES[prog.dtype]
    p = s.params["pads"]
    if len(src.shape) == 4:
        _, h, w, c = src.shape
        wo = w + p[2] + p[3]
        return dst.offset + (p[0] * wo + p[2]) * c * bpe, wo * c * bpe, src.offset, w * c * bpe, h, w * c * bpe
    _, c, length = src.shape
    return dst.offset + p[0] * bpe, (length + p[0] + p[1]) * bpe, src.offset, length * bpe, c, length * bpe


def pad_call(prog: Program, s) -> str:
    """C for a pad step: the output filled with the zero point's byte (0.0 in float32) a word at a time, then the
    input's rows copied into it."""
    dst = prog.tensors[s.output]
    total = int(np.prod(dst.shape)) * DTYPE_BYTES[prog.dtype]
    byte = int(s.params["fill"]) & 0xFF if prog.dtype == "int8" else 0
    words, tail = divmod(total, 4)
    dst_off, dst_row, src_off, src_row, rows, row_bytes = pad_window(prog, s)
    fill = (f"{{ uint32_t *ek_w = (uint32_t *)(void *)(ek_arena + {dst.offset}u); "
            f"for (uint32_t ek_i = 0u; ek_i < {words}u; ++ek_i) ek_w[ek_i] = 0x{byte * 0x01010101:08x}u; ")
    if tail:
        fill += (f"for (uint32_t ek_i = 0u; ek_i < {tail}u; ++ek_i) ek_arena[{dst.offset + 4 * words}u + ek_i] = "
                 f"{byte}u; ")
    return (fill + f"ek_copy_window(ek_arena + {dst_off}u, {dst_row}u, ek_arena + {src_off}u, {src_row}u, {rows}u, "
            f"{row_bytes}u); }}")


def gate_mask(guard) -> int:
    """The ek_fired bits a guarded call of a conv stream needs (0: runs on every step)."""
    mask = 0
    for g in guard:
        mask |= 1 << g
    return mask


def state_inits(prog: Program) -> list[dict]:
    """The state buffers that do not start at zero (a conv stream's caches start at their padding value, countdowns
    at their first wait), for edgekit_model_reset()."""
    out = []
    for st in prog.states:
        if st.init == 0:
            continue
        value = "-INFINITY" if st.init == float("-inf") else (f"{float(st.init)!r}f" if st.dtype == "float32"
                                                              else str(int(st.init)))
        out.append({"name": st.name, "offset": st.offset, "size": st.size, "ctype": DTYPE_C[st.dtype], "value": value})
    return out


def fill_value(dtype: str, pad: float) -> str:
    """A cache's padding value as the 32-bit pattern ek_cache_fill repeats (int8: four copies of the byte)."""
    if dtype == "int8":
        b = int(pad) & 0xFF
        return f"0x{b * 0x01010101:08x}u"
    bits = int(np.array([pad], np.float32).view(np.uint32)[0])
    return f"0x{bits:08x}u"


def flush_blocks(prog: Program, steps: list[dict]) -> list[dict]:
    """edgekit_model_flush() of a stream that looks ahead: per cache in order, its padding rows, each followed by the
    rendered calls that depend on that cache (the caches before it count as fired)."""
    from edgekit.targets.mcu.convstep import PUSH_KIND

    blocks = []
    for push in (s for s in prog.steps if s.kind == PUSH_KIND and s.params["flush_rows"]):
        p = push.params
        fill = (f"ek_fired = {gate_mask(push.guard)}u | ek_cache_fill(ek_state + {p['cache']}, {p['row_bytes']}u, "
                f"{p['rows']}u, (int32_t *)(ek_state + {p['countdown']}), {p['period']}, {p['gate']}u, "
                f"{fill_value(prog.dtype, p['pad'])})")
        after = [r for r, s in zip(steps, prog.steps) if p["gate"] in s.guard and s is not push]
        blocks.append({"cache": push.output, "rows": p["flush_rows"], "fill": fill, "steps": after})
    return blocks


def stream_call(prog: Program, s) -> str:
    """C for a conv stream's cache push (shift in the new row, count down to the next firing) or running pool."""
    src = prog.tensors[s.inputs[0]]
    src_ptr = f"ek_state + {src.state_offset}" if src.state_offset is not None else f"ek_arena + {src.offset}"
    p = s.params
    if s.kind == "cache_push":
        return (f"ek_fired |= ek_cache_push(ek_state + {p['cache']}, {src_ptr}, {p['row_bytes']}u, {p['rows']}u, "
                f"(int32_t *)(ek_state + {p['countdown']}), {p['period']}, {p['gate']}u)")
    out = prog.tensors[s.output]
    if prog.dtype == "int8":
        return (f"ek_running_pool_s8((const int8_t *)({src_ptr}), (int32_t *)(ek_state + {p['ring']}), "
                f"(int32_t *)(ek_state + {p['total']}), (int32_t *)(ek_state + {p['pos']}), {p['rows']}u, "
                f"{p['channels']}u, {p['inner']}u, {p['in_zp']}, {p['mult']}, {p['shift']}, {p['out_zp']}, "
                f"(int8_t *)(ek_arena + {out.offset}))")
    return (f"ek_running_pool_f32((const float *)({src_ptr}), (float *)(ek_state + {p['ring']}), "
            f"(int32_t *)(ek_state + {p['pos']}), {p['rows']}u, {p['channels']}u, {p['inner']}u, "
            f"(float *)(ek_arena + {out.offset}))")


@dataclass
class Sources:
    src_dir: Path
    firmware_dir: Path
    model_sources: list[Path]
    include_dirs: list[Path]
    tvm_symbols: list[str]
    kernel_libraries: list[str]


def tvm_include_root(package: str) -> Path:
    import importlib

    mod = importlib.import_module(package)
    return Path(mod.__file__).parent / "include"


def copy_tvm_headers(dest: Path) -> None:
    for package, rel in TVM_HEADERS:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tvm_include_root(package) / rel, target)


def copy_kernel_library(files: tuple[Path, ...], src: Path) -> list[Path]:
    """Copy the files of one of edgekit's kernel libraries into ``src``; returns the copied C files."""
    for f in files:
        shutil.copyfile(f, src / f.name)
    return [src / f.name for f in files if f.suffix == ".c"]


def kernel_libraries(prog: Program) -> list[str]:
    """edgekit's kernel libraries (C file stems) the program calls."""
    from edgekit.targets.mcu.ek_kernels import SPARSE_KINDS

    kinds = {s.kind for s in prog.steps}
    libs = []
    if any(k.startswith("ek_") and k not in SPARSE_KINDS for k in kinds):
        libs.append("ek_nn_s8")
    if kinds & set(SPARSE_KINDS):  # pruned layers stored compressed
        libs.append("ek_sparse_s8")
    return libs


def write_sources(prog: Program, kernels_c: str | None, symbols: dict[int, str], arg_shapes: dict[int, list[tuple]],
                  out: Path, cpu: str, kernel_sources: dict[str, tuple[Path, ...]], *, src: Path | None = None,
                  operating_point: dict | None = None) -> Sources:
    """Render the model sources into ``out/src``. ``symbols``: step index -> TVM kernel symbol; ``arg_shapes``: step
    index -> the shapes a recurrent cell kernel declares for its arguments, in argument order.

    One operating point of a nested image (targets/mcu/nested.py) goes into its own folder ``src`` with
    ``operating_point`` = {"prefix": its C symbol prefix, "arena": the shared arena's symbol, "external": const name ->
    the C array (of the widest point) it reads instead of its own}; ``kernels_c`` None: the image's one
    edgekit_kernels.c, the TVM headers and the kernel libraries are written by the caller."""
    from edgekit.targets.mcu.convstep import POOL_KIND, PUSH_KIND
    from edgekit.targets.mcu.streaming import CELL_KIND, COMMIT_KIND

    env = _env()
    op = operating_point or {}
    src = src or out / "src"
    src.mkdir(parents=True, exist_ok=True)
    states = {st.name: st for st in prog.states}

    cnames, consts = const_records(prog, op.get("prefix", "ek"), op.get("external", {}))

    # DLTensor descriptors for the TVM kernels.
    dl_index: dict[tuple[str, tuple], int] = {}
    dltensors = []
    ext_tensors = []  # the model input read in place: its data pointer is set at run time

    def dl(name: str, shape: tuple) -> str:
        if name in prog.tensors and prog.tensors[name].external:
            t = prog.tensors[name]
            if not ext_tensors:
                code, bits = DL_CODES[t.dtype]
                ext_tensors.append({"data": "0", "shape": [int(v) for v in shape], "code": code, "bits": bits,
                                    "comment": f"{name} (model input, read in place)"})
            return "EK_TX(0)"
        key = (name, tuple(shape))
        if key not in dl_index:
            if name in prog.consts:
                data, dtype, comment = cnames[name], str(prog.consts[name].data.dtype), f"const {name}"
            elif name in states:
                st = states[name]
                data, dtype, comment = f"ek_state + {st.offset}", st.dtype, f"state {name} @ state+{st.offset}"
            elif prog.tensors[name].state_offset is not None:  # a conv stream's cache
                t = prog.tensors[name]
                data, dtype, comment = f"ek_state + {t.state_offset}", t.dtype, f"cache {name} @ state+{t.state_offset}"
            else:
                t = prog.tensors[name]
                data, dtype, comment = f"ek_arena + {t.offset}", t.dtype, f"{name} @ arena+{t.offset}"
            code, bits = DL_CODES[dtype]
            dl_index[key] = len(dltensors)
            dltensors.append({"data": data, "shape": [int(v) for v in shape], "code": code, "bits": bits,
                              "comment": comment})
        return f"EK_T({dl_index[key]})"

    steps, ek_steps = [], []
    ek_calls = None  # micro-kernel calls and their (shared) parameter structs, rendered once
    for i, s in enumerate(prog.steps):
        if s.kind == CELL_KIND:
            names = s.inputs + s.consts + s.params["outputs"]
            steps.append({"layer": s.layer, "kind": "tvm", "what": f"TVM {s.spec.op}", "symbol": symbols[i],
                          "args": [dl(n, shape) for n, shape in zip(names, arg_shapes[i])]})
        elif s.kind == "tvm":
            args = [dl(x, prog.tensors[x].shape) for x in s.inputs]
            args += [dl(c, prog.consts[c].data.shape) for c in s.consts]
            args.append(dl(s.output, prog.tensors[s.output].shape))
            steps.append({"layer": s.layer, "kind": "tvm", "what": f"TVM {s.spec.op}", "symbol": symbols[i],
                          "args": args})
        elif s.kind == "copy":
            what = "window of the input" if "crop_row" in s.params else "tile into the full tensor"
            steps.append({"layer": s.layer, "kind": "copy", "what": what, "call": copy_call(prog, s)})
        elif s.kind == "pad":
            steps.append({"layer": s.layer, "kind": "copy", "what": "zero padding", "call": pad_call(prog, s)})
        elif s.kind == "copy_blocks":
            steps.append({"layer": s.layer, "kind": "copy", "what": "depth_to_space: blocks of pixels",
                          "call": blocks_call(prog, s)})
        elif s.kind in (PUSH_KIND, POOL_KIND):
            steps.append({"layer": s.layer, "kind": s.kind, "what": s.kind.replace("_", " "),
                          "call": stream_call(prog, s)})
        elif s.kind == COMMIT_KIND:
            st, new = states[s.output], prog.tensors[s.inputs[0]]
            steps.append({"layer": s.layer, "kind": "copy", "what": f"new {st.kind} into the state",
                          "call": f"ek_copy_bytes(ek_state + {st.offset}, ek_arena + {new.offset}, {st.nbytes}u)"})
        else:
            from edgekit.targets.mcu import ek_kernels

            if ek_calls is None:
                ek_calls = ek_kernels.render_calls(prog, cnames)
            call, struct = ek_calls[i]
            steps.append({"layer": s.layer, "kind": s.kind, "what": s.kind, "call": call})
            if struct is not None:
                ek_steps.append(struct)

    for rendered, s in zip(steps, prog.steps):
        rendered["guard"] = gate_mask(s.guard)
    flushes = flush_blocks(prog, steps) if getattr(prog, "flushes", False) else []
    libraries = kernel_libraries(prog)
    inp, outp = prog.tensors[prog.input], prog.tensors[prog.output]
    event_states = [{"name": st.name, "offset": st.offset, "size": st.size, "ctype": DTYPE_C[st.dtype]}
                    for st in prog.event_states]
    common = {"model_name": prog.name, "cpu": cpu, "dtype": prog.dtype, "version": __version__,
              "ctype": DTYPE_C[prog.dtype], "kernel_libraries": libraries, "streaming": prog.streaming,
              "conv_stream": getattr(prog, "stream", None) is not None,
              "arena_bytes": prog.arena_bytes, "state_bytes": prog.state_bytes,
              "api_prefix": op.get("prefix"), "arena_symbol": op.get("arena")}
    (src / "edgekit_model.h").write_text(env.get_template("edgekit_model.h.j2").render(
        flushes=bool(flushes),
        **common, input_bytes=inp.nbytes, output_bytes=outp.nbytes, input_shape=list(inp.shape),
        output_shape=list(outp.shape), input_layout="NHWC" if len(inp.shape) == 4 else "as in PyTorch",
        input_q=prog.input_q or (1.0, 0), output_q=prog.output_q or (1.0, 0), input_in_place=inp.external,
        sequence_steps=prog.steps_per_sequence, state_list=", ".join(sorted({st.kind for st in prog.states})),
        event_units=sum(st.size for st in prog.event_states)))
    tvm_symbols = sorted(set(symbols.values()))
    context = dict(
        **common, steps=steps, ek_steps=ek_steps, dltensors=dltensors, tvm_symbols=tvm_symbols,
        ext_tensors=ext_tensors, input_in_place=inp.external, uses_copy=any(s.kind in ("copy", "copy_blocks", "pad") for s in prog.steps),
        states=prog.states, event_states=event_states, state_inits=state_inits(prog), flushes=flushes,
        output_guard=gate_mask(getattr(prog, "output_guard", ())),
        input_offset=prog.tensors[root_of(prog, prog.input)].offset,
        output_offset=prog.tensors[root_of(prog, prog.output)].offset)
    table = call_table(prog, cnames, symbols, consts) if not op else None
    context.update(table or {}, table=table, points=[])  # a call table brings its own descriptors and TVM calls
    (src / "edgekit_model.c").write_text(env.get_template("edgekit_model.c.j2").render(**context))
    model_sources = [src / "edgekit_model.c", write_weights(prog, src, consts)]
    if kernels_c is not None:
        (src / "edgekit_kernels.c").write_text(kernels_c)
        copy_tvm_headers(src / "include")
        model_sources.append(src / "edgekit_kernels.c")
        for lib in libraries:
            model_sources += copy_kernel_library(kernel_sources[lib], src)
    return Sources(src, out / "firmware", model_sources, [src, src / "include"], tvm_symbols, libraries)


# A nested image's one arena (templates/nested_model.c.j2); a single program's is the static ek_arena.
SHARED_ARENA_SYMBOL = "ek_arena_shared"


def const_cname(prefix: str, index: int, name: str) -> str:
    """The C array of a program's ``index``-th constant ``name`` (edgekit_weights.c)."""
    return f"{prefix}_c{index}_{c_ident(name)}"[:60]


def uses_call_table(prog: Program) -> bool:
    """Whether edgekit_model.c runs ``prog`` from a call table (templates/call_table.c.j2) rather than a function
    with one call per step, when every call can be a row (targets/mcu/nested.py ``_tabulable``): patch-based programs,
    whose tiles repeat each layer's call with a few fields changed (mbv2-w035 patched on the M7: 280 calls, 10.4 KB
    of unrolled calls and 15.2 KB of structs before), and the others where the code-size model prices the table
    smaller (``prog.call_table``, set by build_program: cost.call_table_pays). Rows hold edgekit's micro-kernels
    (table lookups, layout moves, products and two-part concatenations too), tile copies and TVM kernels."""
    from edgekit.targets.mcu.nested import _tabulable

    wanted = prog.patch is not None if prog.call_table is None else prog.call_table
    return wanted and _tabulable(prog)


def call_table(prog: Program, cnames: dict[str, str], symbols: dict[int, str], consts: list[dict]) -> dict | None:
    """The context of templates/call_table.c.j2 for ``prog`` (one table), or None when it keeps its unrolled calls."""
    from edgekit.targets.mcu.nested import call_tables

    if not uses_call_table(prog):
        return None
    return call_tables([prog], [cnames], [symbols], {c["cname"]: c["ctype"] for c in consts}, prog.arena_bytes)


def const_records(prog: Program, prefix: str, external: dict[str, str]) -> tuple[dict[str, str], list[dict]]:
    """(const name -> its C array, the arrays as edgekit_weights.{h,c} print them); ``external``: const name -> the
    C array of another program (a nested image's widest point) this one reads instead of its own."""
    cnames = {name: external.get(name) or const_cname(prefix, i, name) for i, name in enumerate(prog.consts)}
    consts = [{"name": c.name, "cname": cnames[c.name], "ctype": DTYPE_C[str(c.data.dtype)],
               "count": "" if c.name in external else max(c.data.size, 1), "shape": "x".join(map(str, c.data.shape)),
               "dtype": str(c.data.dtype), "external": c.name in external,
               "body": "" if c.name in external else c_values(c.data)} for c in prog.consts.values()]
    return cnames, consts


def write_weights(prog: Program, src: Path, consts: list[dict]) -> Path:
    """edgekit_weights.{h,c} of ``prog`` in ``src`` (``consts`` from :func:`const_records`); returns the .c file."""
    env = _env()
    src.mkdir(parents=True, exist_ok=True)
    common = {"model_name": prog.name, "version": __version__, "consts": consts, "const_bytes": prog.const_bytes}
    (src / "edgekit_weights.h").write_text(env.get_template("edgekit_weights.h.j2").render(**common))
    (src / "edgekit_weights.c").write_text(env.get_template("edgekit_weights.c.j2").render(**common))
    return src / "edgekit_weights.c"


def write_nested_sources(src: Path, kernels_c: str, kernel_sources: dict[str, tuple[Path, ...]],
                         libraries: list[str], context: dict, table: dict | None = None) -> list[Path]:
    """The parts of a nested image the operating points share, in ``src``: the switch (edgekit_model.c/.h from
    templates/nested_model.*.j2 with ``context``), TVM's kernels, its headers and the kernel libraries; returns the
    C files to compile. With ``table`` (targets/mcu/nested.py's call tables) edgekit_model.c is the one driver loop
    over every point's table of calls (templates/nested_table.c.j2) instead of a switch between per-point drivers."""
    env = _env()
    src.mkdir(parents=True, exist_ok=True)
    (src / "edgekit_model.h").write_text(env.get_template("nested_model.h.j2").render(version=__version__, **context))
    driver = "nested_model.c.j2" if table is None else "nested_table.c.j2"
    (src / "edgekit_model.c").write_text(env.get_template(driver).render(version=__version__, **context,
                                                                          **(table or {})))
    (src / "edgekit_kernels.c").write_text(kernels_c)
    copy_tvm_headers(src / "include")
    files = [src / "edgekit_model.c", src / "edgekit_kernels.c"]
    for lib in libraries:
        files += copy_kernel_library(kernel_sources[lib], src)
    return files


def write_nested_harness(fw: Path, board: str, n_tests: int) -> Path:
    """main.c of a nested image's test firmware (templates/nested_main.c.j2: every test input at every point)."""
    path = fw / "main.c"
    path.write_text(_env().get_template("nested_main.c.j2").render(version=__version__, board=board,
                                                                   n_tests=n_tests))
    return path


def write_harness(fw: Path, model_name: str, dtype: str, streaming: bool, test_inputs: np.ndarray, board: str,
                  event_units: int = 0, print_steps: bool = False, flush: bool = False) -> None:
    """main.c and the test data in ``fw``: one input per row (a streaming program: one sequence per row, and with
    ``print_steps`` the output after every step)."""
    env = _env()
    rows = [c_values(x, per_line=10 ** 9).strip().rstrip(",") for x in test_inputs]
    common = {"model_name": model_name, "version": __version__, "board": board, "n_tests": len(test_inputs),
              "ctype": DTYPE_C[dtype], "input_elems": int(test_inputs[0].size), "streaming": streaming}
    (fw / "edgekit_testdata.h").write_text(env.get_template("edgekit_testdata.h.j2").render(**common))
    (fw / "edgekit_testdata.c").write_text(env.get_template("edgekit_testdata.c.j2").render(**common, rows=rows))
    (fw / "main.c").write_text(env.get_template("main.c.j2").render(
        **common, steps=int(test_inputs.shape[1]) if streaming else 1, event_units=event_units,
        print_steps=print_steps, flush=flush))


def write_device_harness(fw: Path, **context) -> Path:
    """main.c of a device firmware (templates/device_main.c.j2: the serial protocol's hello and run requests) in
    ``fw``; ``context``: the template's variables."""
    path = fw / "main.c"
    path.write_text(_env().get_template("device_main.c.j2").render(version=__version__, **context))
    return path


def write_firmware(prog: Program, sources: Sources, test_inputs: np.ndarray, board: str, platform,
                   cflags: list[str], ldflags: list[str], opt_flags: list[str], stack_bytes: int) -> list[Path]:
    """The harness, test data (one input per row; a streaming program: one sequence per row), the platform's board
    support and the Makefile in ``firmware/``; returns the firmware's own sources."""
    env = _env()
    fw = sources.firmware_dir
    fw.mkdir(parents=True, exist_ok=True)
    support = platform.write_board_support(board, fw, stack_bytes=stack_bytes)
    write_harness(fw, prog.name, prog.dtype, prog.streaming, test_inputs, board,
                  sum(st.size for st in prog.event_states), flush=bool(getattr(prog, "flushes", False)))
    firmware_sources = [fw / "main.c", fw / "edgekit_testdata.c"] + list(support.sources)
    rel = lambda p: str(Path("..") / p.relative_to(fw.parent)) if fw.parent in p.parents else p.name  # noqa: E731
    info = platform.board_info(board)
    # The flags edgekit builds with (toolchain.py): the DSP kernels' inline assembly needs the optimizer.
    (fw / "Makefile").write_text(env.get_template("Makefile.j2").render(
        model_name=prog.name, version=__version__, cpu=info["cpu"], board=board,
        kernel_libraries=sources.kernel_libraries, compiler=platform.compiler, size_tool=platform.size_tool,
        emulator=platform.emulator, run_command=platform.emulator_command(board, Path("firmware.elf")),
        cflags=cflags + opt_flags + ["-I../src", "-I../src/include", "-I."], ldflags=ldflags,
        model_sources=[rel(p) for p in sources.model_sources],
        firmware_sources=[p.name for p in firmware_sources]))
    return firmware_sources
