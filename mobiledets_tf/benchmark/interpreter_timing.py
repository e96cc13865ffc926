"""Times `Interpreter.invoke()` of one .tflite model: warm-up runs, then N timed runs.

Inputs are random but fixed (seeded), in the model's own dtype; each timed run is one `invoke()`
measured with `time.perf_counter_ns`, so the figures are the interpreter's latency without any
Python pre- or post-processing. The details also hold the delegation report of the loaded
interpreter (which operators XNNPACK or the given delegate took, `delegation.py`). Used by the local
and Edge TPU backends (in a worker process).
"""
import time
from typing import List, Mapping, Optional, Tuple

import numpy as np

from mobiledets_tf.benchmark.delegation import delegation_report
from mobiledets_tf.tflite_runtime import load_interpreter


def random_inputs(interpreter, seed: int = 0) -> None:
    """Fills every input tensor with seeded random values of its dtype."""
    rng = np.random.default_rng(seed)
    for details in interpreter.get_input_details():
        dtype, shape = details["dtype"], details["shape"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        else:
            value = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
        interpreter.set_tensor(details["index"], value)


def invoke_times_ms(interpreter, warmup_runs: int, num_runs: int) -> Tuple[List[float], float]:
    """(latencies in ms of `num_runs` timed runs, latency of the very first run): `warmup_runs` runs
    come first and are left out of the samples."""
    if num_runs < 1 or warmup_runs < 0:
        raise ValueError(f"need num_runs >= 1 and warmup_runs >= 0, got {num_runs} and {warmup_runs}")
    samples_ms, first_ms = [], None
    for run in range(warmup_runs + num_runs):
        start = time.perf_counter_ns()
        interpreter.invoke()
        elapsed_ms = (time.perf_counter_ns() - start) / 1e6
        first_ms = elapsed_ms if run == 0 else first_ms
        if run >= warmup_runs:
            samples_ms.append(elapsed_ms)
    return samples_ms, first_ms


def time_model(model_path: str, threads: int = 1, xnnpack: bool = True, warmup_runs: int = 10,
               num_runs: int = 50, delegate: Optional[str] = None,
               delegate_options: Optional[Mapping[str, str]] = None) -> Tuple[List[float], dict]:
    """(latency samples in ms, details with init_ms, first_inference_ms and delegation)."""
    start = time.perf_counter_ns()
    interpreter = load_interpreter(model_path, delegate, delegate_options, num_threads=threads,
                                   xnnpack=xnnpack)
    random_inputs(interpreter)
    init_ns = time.perf_counter_ns() - start
    samples_ms, first_ms = invoke_times_ms(interpreter, warmup_runs, num_runs)
    return samples_ms, {"init_ms": init_ns / 1e6, "first_inference_ms": first_ms,
                        "delegation": delegation_report(interpreter).to_dict()}
