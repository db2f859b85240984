"""Static int8 quantization of an ONNX model with ONNX Runtime's tools (QDQ format).

Where it sits: between export (export.py) and the ORT format conversion in the phone target. The result is still an
ordinary ONNX file: QuantizeLinear/DequantizeLinear pairs around float operators, which ONNX Runtime fuses into integer
kernels (QLinearConv, QGemm, QLinearAdd ...) when it loads the model.

Scheme: weights int8, symmetric, one scale per output channel; activations uint8 with a zero point, ranges from the
minimum and maximum seen on the calibration inputs (``CalibrationMethod.MinMax``). ``quant_pre_process`` runs shape
inference and ORT's basic graph optimizations first (the quantizer needs shapes; folding keeps Q/DQ pairs few).
"""
from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgekit.errors import DataError, UnsupportedError

CALIBRATION_BATCH = 16


class _Batches:
    """onnxruntime.quantization.CalibrationDataReader over a numpy array, in batches (the batch axis is dynamic)."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int = CALIBRATION_BATCH, fixed: bool = False):
        self._input_name = input_name
        self._x = np.ascontiguousarray(x, dtype=np.float32)
        self._batch = batch
        self._fixed = fixed
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._x):
            return None
        x = self._x[self._i:self._i + self._batch]
        self._i += self._batch
        if self._fixed and len(x) < self._batch:  # a model with a fixed batch size takes only full batches
            x = np.concatenate([x, np.repeat(x[-1:], self._batch - len(x), 0)], 0)
        return {self._input_name: x}

    def rewind(self) -> None:
        self._i = 0


def check_calibration(calib: np.ndarray | None) -> None:
    if calib is None or len(calib) == 0:
        raise DataError("int8 quantization needs calibration inputs and the model carries none; "
                        "pass --calib FILE (.npy, or .npz with 'x') of typical inputs")


def quantize_int8(src: Path, dst: Path, input_name: str, calib: np.ndarray | None, fixed_batch: int | None = None,
                  exclude: list[str] | None = None, keep_pre: Path | None = None, activations: str = "uint8"
                  ) -> list[str]:
    """Quantize ``src`` into ``dst`` (QDQ, per-channel int8 weights) calibrated on ``calib``; returns notes.
    ``exclude``: operators (by node name) left in float32; ``keep_pre``: where to keep the pre-processed float model
    the quantizer worked on (its tensor names are the QDQ model's; targets/phone/mixed.py cuts layers from it);
    ``activations``: "uint8" or "int8" (asymmetric either way; which is faster depends on the Arm core's kernels)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    check_calibration(calib)
    notes = []

    class Reader(_Batches, CalibrationDataReader):
        pass

    src, dst = Path(src).resolve(), Path(dst).resolve()
    keep_pre = Path(keep_pre).resolve() if keep_pre is not None else None  # the block below changes folder
    # ORT's symbolic shape inference leaves sym_shape_infer_temp.onnx in the working folder when it fails: work in tmp
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp, _quiet(), contextlib.chdir(tmp):
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre))
        except Exception as e:  # noqa: BLE001 - symbolic shape inference fails on some graphs; ONNX's suffices
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            notes.append(f"quantization pre-processing skipped symbolic shape inference ({type(e).__name__})")
        if global_pools(pre):
            notes.append("global average pooling as GlobalAveragePool (ONNX Runtime pools it in int8, channels last)")
        try:
            reader = Reader(input_name, calib, fixed_batch or CALIBRATION_BATCH, fixed=bool(fixed_batch))
            quantize_static(str(pre), str(dst), reader,
                            quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=list(exclude or []),
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UnsupportedError(f"ONNX Runtime's static int8 quantizer failed on this model ({msg}); "
                                   "compile without --quantize, or simplify the model's operators") from e
        if keep_pre is not None:
            shutil.copyfile(pre, keep_pre)
    return notes


def global_pools(path: Path) -> int:
    """Rewrite, in the float model at ``path``, each ReduceMean over all spatial axes (what torch's mean(dim=(2, 3))
    and AdaptiveAvgPool(1) export to) as GlobalAveragePool (then a Flatten where the mean drops those axes); returns
    how many. The quantizer puts Q/DQ around a GlobalAveragePool, which ONNX Runtime runs as an int8 pool on the
    channels-last map; around a ReduceMean it dequantizes the whole map first, transposed back to channels first
    (zoo MobileNetV2-0.35 on the emulated Cortex-A76: 11.61 M -> 11.45 M instructions, outputs identical)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in list(g.value_info) + list(g.input) + list(g.output)
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    inits = {t.name: t for t in g.initializer}
    nodes, count = [], 0
    for n in g.node:
        rank = ranks.get(n.input[0], 0) if n.op_type == "ReduceMean" else 0
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if len(n.input) > 1 and n.input[1]:
            axes = list(np.atleast_1d(numpy_helper.to_array(inits[n.input[1]]))) if n.input[1] in inits else None
        else:
            axes = attrs.get("axes")
        if rank < 3 or axes is None or sorted(int(a) % rank for a in axes) != list(range(2, rank)) or \
                attrs.get("noop_with_empty_axes", 0):
            nodes.append(n)
            continue
        if attrs.get("keepdims", 1):
            nodes.append(helper.make_node("GlobalAveragePool", [n.input[0]], [n.output[0]], name=n.name))
        else:
            pooled = f"{n.output[0]}_pooled"
            nodes += [helper.make_node("GlobalAveragePool", [n.input[0]], [pooled], name=n.name),
                      helper.make_node("Flatten", [pooled], [n.output[0]], name=f"{n.name}_flatten", axis=1)]
        count += 1
    if count:
        del g.node[:]
        g.node.extend(nodes)
        onnx.save(model, str(path))
    return count


def qdq_session(path: Path):
    """A session that runs the QDQ model as written (graph optimizations off: DequantizeLinear, the float operator,
    QuantizeLinear), i.e. what an integer kernel without saturation computes, up to float rounding."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _quiet():
    # The quantizer logs progress at INFO and prints histograms; edgekit reports what matters itself.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
