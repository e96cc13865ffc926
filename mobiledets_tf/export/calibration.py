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
"""
import contextlib
from typing import Dict, List, Sequence, Tuple

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tensorflow.lite.python.optimize import calibrator as tflite_calibrator

from mobiledets_tf.export.flatbuffer_model import pack_model, read_model

Range = Tuple[float, float]


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


def recalibrated(calibrated_model: bytes, samples: Sequence) -> bytes:
    """The stock calibrator's output with each recorded range replaced by the observed one."""
    recorded = recorded_ranges(calibrated_model)
    return with_ranges(calibrated_model, observed_ranges(calibrated_model, samples, sorted(recorded)))


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
