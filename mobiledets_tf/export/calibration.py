"""Post-training int8 calibration with the ranges each tensor really takes.

TFLite's calibrator (TensorFlow 2.20) logs every op's input tensors a second time after the op has
run. Where the memory planner let the op write its output into an input's buffer (in-place ADD,
MUL, ...), that input's recorded range becomes the union of its own range and the output's
(tensorflow/tensorflow#127842). Any single-consumer input of an in-place op is hit; the decomposed
int8 hard-swish `(x * 1/6) * relu6(x + 3)` worst of all: the range of `x * 1/6` grows to that of
the hard-swish output, about 6x too wide, and MobileDet-CPU lost about 6 AP50 points to it.

`calibrated_without_shared_buffers()` patches the converter's calibration step for the duration of a
conversion: the stock calibrator still runs (it also prepares the model for the quantizer), then
every range it recorded is replaced by the min/max that the same float model gives when run with all
tensors preserved, where no buffer is shared. Everything after calibration (the quantizer and its
options) is the converter's own.

One more correction: a tensor that is (almost) zero on every calibration image (a ReLU after a
convolution whose outputs are all negative: squeeze-and-excite reduce layers that training left dead)
gets a range of ~1e-6 and a scale of ~1e-9. The convolution writing it then has an input scale x
weight scale / output scale in the thousands, which XNNPACK refuses (it supports less than 256; the
TFLite delegate then aborts the process while preparing the model). `widened_dead_ranges` widens
such an output range until that ratio is at most `MAX_REQUANTIZATION_SCALE`; the tensor's values,
all about zero, still round to zero.
"""
import contextlib
from typing import Dict, List, Sequence, Tuple

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tensorflow.lite.python.optimize import calibrator as tflite_calibrator

from mobiledets_tf.export.flatbuffer_model import WEIGHTED_OPS, builtin_code, pack_model, read_model
from mobiledets_tf.export.requantization import TARGET_REQUANTIZATION_SCALE

Range = Tuple[float, float]
# XNNPACK rejects a quantized convolution whose input scale x weight scale / output scale reaches
# 256 (`requantization.XNNPACK_MAX_REQUANTIZATION_SCALE`); ranges are widened to keep it at most this
# (weight scales: the quantizer's max |w| / 127).
MAX_REQUANTIZATION_SCALE = TARGET_REQUANTIZATION_SCALE


def recorded_ranges(model_bytes: bytes) -> Dict[int, Range]:
    """Tensor index -> (min, max) recorded by calibration in the first subgraph of `model_bytes`."""
    subgraph = read_model(model_bytes).subgraphs[0]
    ranges = {}
    for index, tensor in enumerate(subgraph.tensors):
        q = tensor.quantization
        if q is not None and q.min is not None and q.max is not None and len(q.min) == 1 and len(q.max) == 1:
            ranges[index] = (float(q.min[0]), float(q.max[0]))
    return ranges


def _as_input_list(sample) -> List[np.ndarray]:
    if isinstance(sample, dict):
        raise ValueError("calibration samples must be lists of input arrays, not signature dicts")
    return [np.asarray(value) for value in sample]


def observed_ranges(model_bytes: bytes, samples: Sequence, tensors: Sequence[int]) -> Dict[int, Range]:
    """The min/max each of `tensors` takes over `samples` (lists of input arrays, in input order),
    from TFLite's reference kernels with every tensor preserved (so no op shares a buffer)."""
    interpreter = Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()
    low = {index: np.inf for index in tensors}
    high = {index: -np.inf for index in tensors}
    for sample in samples:
        values = _as_input_list(sample)
        if len(values) != len(inputs):
            raise ValueError(f"a calibration sample has {len(values)} arrays for {len(inputs)} model inputs")
        for detail, value in zip(inputs, values):
            interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]))
        interpreter.invoke()
        for index in tensors:
            value = interpreter.get_tensor(index)
            if value.size:
                low[index] = min(low[index], float(value.min()))
                high[index] = max(high[index], float(value.max()))
    return {index: (low[index], high[index]) for index in tensors if low[index] <= high[index]}


def with_ranges(model_bytes: bytes, ranges: Dict[int, Range]) -> bytes:
    """`model_bytes` with the recorded (min, max) of the first subgraph's tensors set to `ranges`."""
    model = read_model(model_bytes)
    tensors = model.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        tensors[index].quantization.min = [low]
        tensors[index].quantization.max = [high]
    return pack_model(model)


def widened_dead_ranges(model_bytes: bytes, ranges: Dict[int, Range]) -> Dict[int, Range]:
    """`ranges` with the output range of every convolution (depthwise, fully connected) widened
    where input scale x weight scale / output scale would exceed `MAX_REQUANTIZATION_SCALE`."""
    model = read_model(model_bytes)
    subgraph = model.subgraphs[0]
    widened = dict(ranges)
    for op in subgraph.operators:
        if builtin_code(model, op) not in WEIGHTED_OPS:
            continue
        source, weights, output = int(op.inputs[0]), subgraph.tensors[op.inputs[1]], int(op.outputs[0])
        data = model.buffers[weights.buffer].data
        if source not in widened or output not in widened or data is None or not len(data) or weights.type != 0:
            continue   # 0: FLOAT32
        weight_scale = float(np.abs(np.frombuffer(bytes(data), np.float32)).max()) / 127.0
        input_scale = _width(widened[source]) / 255.0
        needed = 255.0 * input_scale * weight_scale / MAX_REQUANTIZATION_SCALE
        low, high = widened[output]
        if _width((low, high)) < needed:
            widened[output] = (min(low, 0.0), min(low, 0.0) + needed) if high > 0 or low >= 0 else \
                (max(high, 0.0) - needed, max(high, 0.0))
    return widened


def _width(value_range: Range) -> float:
    """The width of a range once it includes 0, as the quantizer makes it."""
    low, high = value_range
    return max(high, 0.0) - min(low, 0.0)


def recalibrated(calibrated_model: bytes, samples: Sequence) -> bytes:
    """The stock calibrator's output with each recorded range replaced by the observed one (dead
    convolution outputs widened, `widened_dead_ranges`)."""
    recorded = recorded_ranges(calibrated_model)
    observed = observed_ranges(calibrated_model, samples, sorted(recorded))
    return with_ranges(calibrated_model, widened_dead_ranges(calibrated_model, observed))


@contextlib.contextmanager
def calibrated_without_shared_buffers():
    """Within this context, TFLite conversions calibrate with `recalibrated` ranges (module docstring)."""
    stock_calibrate = tflite_calibrator.Calibrator.calibrate

    def calibrate(self, dataset_gen):
        samples = [_as_input_list(sample) for sample in dataset_gen()]
        return recalibrated(stock_calibrate(self, lambda: iter(samples)), samples)

    tflite_calibrator.Calibrator.calibrate = calibrate
    try:
        yield
    finally:
        tflite_calibrator.Calibrator.calibrate = stock_calibrate
