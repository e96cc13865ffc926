"""Latency per op type on this machine's CPU, by timing each operator of a model on its own.

The ai-edge-litert Python interpreter has no op profiler (TFLite's per-op profiling lives in the C++
`benchmark_model` tool, which the adb backend uses). So the local backend cuts every operator out
into a one-op model (`single_op_models`), loads it with the same interpreter settings as the whole
model (threads, XNNPACK on or off, the same external delegate), feeds it seeded random inputs of its
own types and times `invoke()`: warm-up runs, then the median of the timed runs. The op-type table
sums those medians. An isolated operator pays the interpreter's per-invocation cost and its own
delegate hand-off, and runs with its inputs hot in cache, while the whole graph pays the hand-offs
between delegate partitions instead: the table therefore also states the whole model's latency
measured in the same run beside the summed op times.
"""
from typing import Mapping, Optional

import numpy as np

from mobiledets_tf.benchmark.interpreter_timing import invoke_times_ms, random_inputs
from mobiledets_tf.benchmark.op_profile import OpProfile, aggregate
from mobiledets_tf.benchmark.single_op_models import single_op_models
from mobiledets_tf.tflite_runtime import load_interpreter

LOCAL_METHOD = ("each operator cut out into a one-op model and timed alone on this CPU with the same "
                "interpreter settings (median of the timed runs); the ai-edge-litert Python interpreter has no "
                "op profiler")


def profile_ops(model_bytes: bytes, threads: int = 1, xnnpack: bool = True, delegate: Optional[str] = None,
                delegate_options: Optional[Mapping[str, str]] = None, warmup_runs: int = 3,
                num_runs: int = 20, model_ms: Optional[float] = None) -> OpProfile:
    """The per-op-type table of a .tflite model given as bytes (see the module docstring)."""
    node_times = []
    for index, name, op_model in single_op_models(model_bytes):
        interpreter = load_interpreter(op_model, delegate, delegate_options, num_threads=threads,
                                       xnnpack=xnnpack)
        random_inputs(interpreter, seed=index)
        node_times.append((name, float(np.median(invoke_times_ms(interpreter, warmup_runs, num_runs)[0]))))
    return aggregate(node_times, LOCAL_METHOD, model_ms)
