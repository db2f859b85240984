"""The phone target's cost model: ONNX Runtime's latency and file size of a model, before anything is built.

On a profile fitted to its emulated Arm core (``arm_*`` terms, written by ``bench/phone.py --calibrate``): instructions
= base + per layer · layers + per im2col window element · a conv's windows (pixels x input channels x taps: what its
GEMM packs once for all output channels) + Σ instructions per MAC by kernel family (convs with fewer than 8 input
channels apart;
depthwise convs on ONNX Runtime's direct 3x3 kernel or its im2col path, plus per channel, channel row and pixel) ·
MACs + per output · outputs of the layers with weights + per element · elements of the other layers by kind
(pooling, copies, resampling, arithmetic), for float32 and int8 (all layers int8) separately; latency =
instructions · the profile's cycles per instruction / clock.

Where it sits: targets/phone (Model -> Artifact); the shared per-layer table and arena plan come from
edgekit/estimate.py. With a fitted profile (targets/profiles/cost/phone-arm64.toml, written by
``bench/estimators.py --calibrate-phone``): latency = µs per inference + µs per layer · layers + Σ ns per MAC by
kernel family · MACs + ns per element · elements; file = weights + bytes per layer, per weighted layer and per
channel. Without one: peak MAC throughput of the profile. Energy = MACs · pJ/MAC of the dtype.
"""
from __future__ import annotations

from edgekit.analysis import macs_of
from edgekit.estimate import Estimate, activation_plan, layer_family, layer_table
from edgekit.graph import Graph
from edgekit.targets.profiles import TargetProfile

PHONE_KINDS = ("conv2d", "depthwise", "linear", "rnn")


def phone_terms(graph: Graph) -> dict[str, float]:
    """Work of a graph in the phone cost model's terms: MACs per kernel family, other elements, layer count, and for
    the file size the layers with weights and their output channels (an int8 QDQ file keeps a scale and zero point per
    channel)."""
    terms = {f"macs_{k}": 0.0 for k in PHONE_KINDS}
    terms.update(elements=0.0, layers=0.0, weighted=0.0, channels=0.0)
    for n in graph.nodes:
        if n.op == "input":
            continue
        kind = layer_family(n)
        terms["layers"] += 1
        if kind in PHONE_KINDS:
            if n.params:  # (a matmul of two activations has no weights, so no scales in the file)
                terms["weighted"] += 1
                terms["channels"] += n.shape[-1] if n.op in ("gru", "lstm") or kind == "rnn" else n.shape[1]
            terms[f"macs_{kind}"] += macs_of(n, graph)
        else:
            terms["elements"] += n.elements
    return terms


# The Arm instruction model's terms per layer (fitted per core and dtype by bench/phone.py --calibrate).
ARM_TERMS = ("layer", "mac_conv2d", "mac_conv2d_thin", "conv_window", "mac_conv_transpose", "mac_depthwise",
             "mac_depthwise_generic",
             "dw_channel", "dw_row", "dw_pixel", "mac_linear", "mac_rnn", "output", "element_pool", "element_gpool",
             "element_move", "element_resize", "element_binary", "element_silu", "element_tanh", "element")
THIN_CONV_CHANNELS = 8  # a conv reading fewer input channels (a first layer) runs ONNX Runtime's slow im2col path
# Layers without weights by what ONNX Runtime does per element: pooling windows, copies (slices, concatenation,
# reshapes: memcpy-like), resampling (index arithmetic per output), and the rest (arithmetic, activations).
POOL_OPS = {"maxpool2d", "avgpool2d", "global_avgpool", "maxpool1d", "avgpool1d", "adaptive_avgpool2d"}
MOVE_OPS = {"select", "flatten", "concat", "reshape", "transpose", "pad", "identity", "split", "squeeze",
            "unsqueeze", "permute", "slice", "chunk", "depth_to_space"}
RESIZE_OPS = {"upsample", "resize", "interpolate"}
# Two-operand arithmetic (a residual add, a squeeze-excite scaling), ONNX Runtime's vectorized loops: apart from the
# activations (hardswish, sigmoid, ...), which cost several times more per element (zoo ResNet-18's adds of 224x224
# maps pulled a shared term from 8.4 to 4.3 float32 instructions an element, MobileNetV3's hardswish layers then -18 %).
BINARY_OPS = {"add", "mul", "sub", "div"}


def depthwise_fast(node) -> bool:
    """ONNX Runtime's direct float depthwise kernel (MLAS, per channel in CHW) takes 3x3 windows at stride 1 with
    one pixel of padding all round; other depthwise convs (stride 2, 5x5, causal padding) run im2col and a GEMM per
    channel, several times the instructions per MAC (measured per layer on the emulated A76: 1.6-11 against 8-25)."""
    a = node.attrs
    pad = a.get("padding", (0, 0))
    return (tuple(a["kernel_size"]) == (3, 3) and tuple(a["stride"]) == (1, 1) and tuple(pad) == (1, 1)
            and tuple(a.get("dilation", (1, 1))) == (1, 1))


def arm_layer_terms(node, graph: Graph, dtype: str = "fp32") -> dict[str, float]:
    """One layer's amounts of ARM_TERMS: MACs by kernel family (convs with few input channels apart), output
    elements of the layers with weights (bias, activation and requantization per output), elements of the rest by
    what they do (pooling, copies, resampling, two-operand arithmetic, activations). A transposed conv is priced as
    one layer by its own MACs: ONNX Runtime's ConvTranspose in float32; in int8 whichever of QDQ ConvTranspose and
    edgekit's phase convs (targets/phone/export.phase_conv_transposes) measured fewer instructions, which its
    own int8 term averages (``dtype`` is kept for the terms that differ by dtype)."""
    kind = layer_family(node)
    if "part_of" in node.attrs:  # the interleave and crop of a lowered transposed conv: inside the one layer
        return {}
    t = {"layer": 1.0}
    if "transposed" in node.attrs:  # ConvTranspose: a GEMM over the input pixels and col2im; its MACs are the
        # transposed conv's (every input pixel times the taps and output channels), whatever the phases
        t["mac_conv_transpose"] = float(node.attrs["transposed"]["macs"])
        t["output"] = float(node.elements)
        return t
    if kind in PHONE_KINDS:
        if kind == "conv2d" and node.inputs and len(graph[node.inputs[0]].shape) > 1 \
                and graph[node.inputs[0]].shape[1] < THIN_CONV_CHANNELS:
            kind = "conv2d_thin"
        if kind == "depthwise":  # per channel (a kernel call each), per channel row (CHW), per pixel (NHWC int8)
            shape = node.shape  # [N, C, H, W], or [N, C, L] for a Conv1d: one row of L pixels per channel
            rows = shape[2] if len(shape) > 3 else 1
            pixels = rows * shape[-1] if len(shape) > 2 else 1
            t.update(dw_channel=float(shape[1]), dw_row=float(shape[1] * rows), dw_pixel=float(pixels))
            if not depthwise_fast(node):
                kind = "depthwise_generic"
        t[f"mac_{kind}"] = float(macs_of(node, graph))
        t["output"] = float(node.elements)
        if kind in ("conv2d", "conv2d_thin") and len(node.shape) > 1 and node.shape[1]:
            # its im2col windows: pixels x input channels (of a group) x taps, each group's (= MACs / output
            # channels of a group). ONNX Runtime's GEMM packs each window element once for all output channels, so
            # a layer with few of them pays more per MAC (zoo ResNet-8's 16-channel 3x3 convs 0.25 int8 instructions
            # per MAC on the emulated A76, ResNet-18's 256-channel ones 0.09).
            t["conv_window"] = t[f"mac_{kind}"] * node.attrs.get("groups", 1) / node.shape[1]
    elif node.op == "global_avgpool":  # per input element: ONNX Runtime's reduction over each channel's map (a
        # squeeze-excite's pool too: priced with the window pools, zoo EfficientNet-B0's 17 came out 6x too dear)
        t["element_gpool"] = float(sum(graph[i].elements for i in node.inputs if i in graph))
    elif node.op in POOL_OPS:  # per input element: each is read by a window
        t["element_pool"] = float(sum(graph[i].elements for i in node.inputs if i in graph))
    elif node.op in MOVE_OPS:
        t["element_move"] = float(node.elements)
    elif node.op in RESIZE_OPS:
        t["element_resize"] = float(node.elements)
    elif node.op in BINARY_OPS or node.op == "prelu":  # (ONNX Runtime's PRelu: a broadcast binary kernel, slopes
        # against the map; priced as an activation, zoo FSRCNN's float32 estimate was +107 %)
        t["element_binary"] = float(node.elements)
    elif node.op == "silu":  # x · sigmoid(x): ONNX Runtime's vectorized logistic and product (as exported: Sigmoid,
        # Mul), several times cheaper an element than the other activations' mean (zoo EfficientNet-B0: 10 against 46)
        t["element_silu"] = float(node.elements)
    elif node.op in ("tanh", "sigmoid"):  # ONNX Runtime's vectorized tanh / logistic kernels (MLAS), apart from the
        # activations it composes (hardswish): zoo ESPCN's tanh layers pulled MobileNetV3's float estimate to -17 %
        t["element_tanh"] = float(node.elements)
    else:
        t["element"] = float(node.elements)
    return t


def arm_terms(graph: Graph, dtype: str = "fp32") -> dict[str, float]:
    """The whole graph's amounts of ARM_TERMS (what the fit regresses on) for ``dtype`` ("fp32" or "int8")."""
    total = dict.fromkeys(ARM_TERMS, 0.0)
    for n in graph.nodes:
        if n.op != "input":
            for k, v in arm_layer_terms(n, graph, dtype).items():
                total[k] += v
    return total


def phone_estimate(graph: Graph, profile: TargetProfile, dtype: str,
                   weight_bytes: dict[str, int] | None = None) -> Estimate:
    """Phone: ONNX Runtime's per-operator costs when the profile carries a fitted model
    (targets/profiles/cost/phone-arm64.toml: ns per MAC per kernel family, ns per element, µs per layer, µs per
    inference, and file bytes per layer), else peak MAC throughput."""
    table = layer_table(graph, dtype, weight_bytes)
    layers, stored_total, total_macs = table.layers, table.stored_bytes, table.macs
    plan = activation_plan(graph, dtype)
    arena, timeline, state_bytes = plan.arena_bytes, list(plan.live_bytes), 0
    overhead_flash = int(profile.number("runtime", "overhead_flash_bytes", 0))
    overhead_sram = int(profile.number("runtime", "overhead_sram_bytes", 0))
    key = "int8" if dtype == "int8" else "fp32"
    pj = profile.number("energy", f"pj_per_mac_{key}")
    terms = phone_terms(graph)
    fitted = f"ort_us_per_inference_{key}" in profile.cost
    c = lambda name: profile.number("cost", f"{name}_{key}", 0.0)  # noqa: E731 - a term of this dtype
    instructions = None
    if f"arm_per_layer_{key}" in profile.cost:  # fitted to the emulated Arm core's instruction counts
        cpi, clock = profile.number("cost", "cpi", 1.0), profile.clock_hz.value
        per_layer = [sum(c(f"arm_per_{k}") * v for k, v in arm_layer_terms(graph[lay["name"]], graph, key).items())
                     for lay in layers]
        instructions = int(c("arm_base") + sum(per_layer))
        latency_ms = instructions * cpi / clock * 1e3
        for lay, ins in zip(layers, per_layer):
            lay["instructions"] = int(ins)
            lay["latency_ms"] = ins * cpi / clock * 1e3
            lay["energy_uj"] = lay["macs"] * pj * 1e-6
        lat_formula = (f"{instructions:,} Arm instructions ({c('arm_base'):.3g} + {terms['layers']:.0f} layers · "
                       f"{c('arm_per_layer'):.3g} + Σ MACs · instructions/MAC by family (depthwise: ONNX Runtime's direct "
                       f"3x3 kernel or im2col, + per channel, row and pixel) + outputs of layers with "
                       f"weights · {c('arm_per_output'):.3g} + elements of the others by kind; fitted "
                       f"to the emulated {profile.core} by bench/phone.py) · {cpi:g} cycles/instruction / "
                       f"{clock / 1e9:g} GHz")
    elif fitted:
        latency_ms = (c("ort_us_per_inference") + c("ort_us_per_layer") * terms["layers"]
                      + c("ort_ns_per_element") * terms["elements"] * 1e-3
                      + sum(c(f"ort_ns_per_mac_{k}") * terms[f"macs_{k}"] * 1e-3 for k in PHONE_KINDS)) * 1e-3
        for lay in layers:
            node = graph[lay["name"]]
            k = layer_family(node)
            per = c(f"ort_ns_per_mac_{k}") * lay["macs"] if k in PHONE_KINDS else \
                c("ort_ns_per_element") * node.elements
            lay["latency_ms"] = (per * 1e-3 + c("ort_us_per_layer")) * 1e-3
            lay["energy_uj"] = lay["macs"] * pj * 1e-6
        lat_formula = (f"{c('ort_us_per_inference'):.3g} µs + {terms['layers']:.0f} layers · "
                       f"{c('ort_us_per_layer'):.3g} µs + Σ MACs · ns/MAC by family + elements · "
                       f"{c('ort_ns_per_element'):.3g} ns (ONNX Runtime per-op costs fitted by bench/estimators.py)")
    else:
        mps = profile.number("cost", f"macs_per_second_{key}")
        latency_ms = total_macs / mps * 1e3
        for lay in layers:
            lay["latency_ms"] = lay["macs"] / mps * 1e3
            lay["energy_uj"] = lay["macs"] * pj * 1e-6
        lat_formula = f"{total_macs} MACs / {mps:.3g} MAC/s ({key})"
    # The file beyond its weights: fitted to the shipped model.onnx files (bench/phone.py --calibrate) where the
    # profile has the terms, else the runtime's constant
    file_fitted = f"onnx_bytes_base_{key}" in profile.cost
    file_overhead = int(c("onnx_bytes_per_layer") * terms["layers"] + c("onnx_bytes_per_weighted_layer")
                        * terms["weighted"] + c("onnx_bytes_per_channel") * terms["channels"]
                        + c("onnx_bytes_base")) if file_fitted else overhead_flash
    flash = stored_total + file_overhead
    sram = arena + state_bytes + overhead_sram
    energy_uj = total_macs * pj * 1e-6
    formulas = {
        "flash_bytes": f"weights {stored_total} B + file overhead {file_overhead} B" + (
            f" ({terms['layers']:.0f} layers · {c('onnx_bytes_per_layer'):.4g} B + {terms['weighted']:.0f} with "
            f"weights · {c('onnx_bytes_per_weighted_layer'):.4g} B + {terms['channels']:.0f} channels · "
            f"{c('onnx_bytes_per_channel'):.4g} B + {c('onnx_bytes_base'):.4g} B)" if file_fitted else ""),
        "peak_sram_bytes": f"activation arena {arena} B + runtime {overhead_sram} B",
        "latency_ms": lat_formula,
        "energy_uj": f"{total_macs} MACs · {pj:g} pJ/MAC ({key})",
    }
    return Estimate(flash, sram, arena, state_bytes, latency_ms, energy_uj, instructions, total_macs, layers, timeline,
                    formulas)
