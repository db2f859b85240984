"""C sources of a streaming step program (streaming.py), rendered from templates/streaming/.

Where it sits: the Cortex-M target's codegen for recurrent models; codegen.py does the same for one-shot models and
this module reuses its helpers (constants, TVM headers, the test-data and Makefile templates). Output layout as
there: ``src/`` the model (edgekit_model.h with edgekit_model_reset()/edgekit_model_step()), ``firmware/`` the test
firmware that runs whole test sequences step by step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit import __version__
from edgekit.targets.mcu.codegen import (DL_CODES, Sources, copy_kernel_library, _env, c_ident, c_values,
                                              copy_tvm_headers)
from edgekit.targets.mcu.program import DTYPE_C, root_of
from edgekit.targets.mcu.streaming import CELL_KIND, COMMIT_KIND, StepProgram


def write_sources(prog: StepProgram, kernels_c: str, symbols: dict[int, str], arg_shapes: dict[int, list[tuple]],
                  out: Path, cpu: str) -> Sources:
    """Render the model into ``out/src``. ``symbols``: step index -> TVM kernel symbol; ``arg_shapes``: step index ->
    the shapes the kernel declares for its arguments (cells), in argument order."""
    env = _env()
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    uses_ek = any(s.kind.startswith("ek_") for s in prog.steps)
    states = prog.state_by_name

    cnames = {name: f"ek_c{i}_{c_ident(name)}"[:60] for i, name in enumerate(prog.consts)}
    consts = [{"name": c.name, "cname": cnames[c.name], "ctype": DTYPE_C[str(c.data.dtype)],
               "count": max(c.data.size, 1), "shape": "x".join(map(str, c.data.shape)), "dtype": str(c.data.dtype),
               "body": c_values(c.data)} for c in prog.consts.values()]

    dl_index: dict[tuple[str, tuple], int] = {}
    dltensors = []

    def dl(name: str, shape: tuple) -> str:
        key = (name, tuple(shape))
        if key not in dl_index:
            if name in prog.consts:
                data, dtype, comment = cnames[name], str(prog.consts[name].data.dtype), f"const {name}"
            elif name in states:
                st = states[name]
                data, dtype, comment = f"ek_state + {st.offset}", st.dtype, f"state {name} @ state+{st.offset}"
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

    inp, outp = prog.tensors[prog.input], prog.tensors[prog.output]
    event_states = [{"name": st.name, "offset": st.offset, "size": st.size, "ctype": DTYPE_C[st.dtype]}
                    for st in prog.event_states]
    common = {"model_name": prog.name, "cpu": cpu, "dtype": prog.dtype, "version": __version__, "uses_ek": uses_ek,
              "ctype": DTYPE_C[prog.dtype], "state_bytes": prog.state_bytes, "arena_bytes": prog.arena_bytes}
    (src / "edgekit_model.h").write_text(env.get_template("streaming/edgekit_model.h.j2").render(
        **common, input_bytes=inp.nbytes, output_bytes=outp.nbytes, input_shape=list(inp.shape),
        output_shape=list(outp.shape), sequence_steps=prog.steps_per_sequence,
        state_list=", ".join(sorted({st.kind for st in prog.states})),
        event_units=sum(st.size for st in prog.event_states),
        input_q=prog.input_q or (1.0, 0), output_q=prog.output_q or (1.0, 0)))
    tvm_symbols = sorted(set(symbols.values()))
    (src / "edgekit_model.c").write_text(env.get_template("streaming/edgekit_model.c.j2").render(
        **common, steps=steps, ek_steps=ek_steps, dltensors=dltensors, tvm_symbols=tvm_symbols,
        states=prog.states, event_states=event_states,
        input_offset=prog.tensors[root_of(prog, prog.input)].offset,
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
    return Sources(src, out / "firmware", model_sources, [src, src / "include"], tvm_symbols)


def write_firmware(prog: StepProgram, sources: Sources, sequences: np.ndarray, board: str, cflags: list[str],
                   ldflags: list[str], qemu_machine: str, stack_bytes: int) -> list[Path]:
    """The sequence-by-sequence harness, test data [n, T, I], board support and Makefile in ``firmware/``."""
    from edgekit.targets.mcu.platforms.cortex_m.board import write_board_support
    from edgekit.targets.mcu.toolchain import OPT_FLAGS

    env = _env()
    fw = sources.firmware_dir
    fw.mkdir(parents=True, exist_ok=True)
    support = write_board_support(board, fw, stack_bytes=stack_bytes)
    rows = [c_values(x, per_line=10 ** 9).strip().rstrip(",") for x in sequences]
    common = {"model_name": prog.name, "version": __version__, "board": board, "n_tests": len(sequences),
              "ctype": DTYPE_C[prog.dtype], "input_elems": int(sequences[0].size)}
    (fw / "edgekit_testdata.h").write_text(env.get_template("edgekit_testdata.h.j2").render(**common))
    (fw / "edgekit_testdata.c").write_text(env.get_template("edgekit_testdata.c.j2").render(**common, rows=rows))
    (fw / "main.c").write_text(env.get_template("streaming/main.c.j2").render(
        **common, steps=int(sequences.shape[1]), event_units=sum(st.size for st in prog.event_states)))
    firmware_sources = [fw / "main.c", fw / "edgekit_testdata.c"] + list(support.sources)
    rel = lambda p: str(Path("..") / p.relative_to(fw.parent)) if fw.parent in p.parents else p.name  # noqa: E731
    (fw / "Makefile").write_text(env.get_template("Makefile.j2").render(
        model_name=prog.name, version=__version__, cpu=board, board=board,
        uses_ek=any(s.kind.startswith("ek_") for s in prog.steps),
        cflags=cflags + OPT_FLAGS + ["-I../src", "-I../src/include", "-I."], ldflags=ldflags,
        model_sources=[rel(p) for p in sources.model_sources],
        firmware_sources=[p.name for p in firmware_sources], qemu_machine=qemu_machine))
    return firmware_sources
