"""Worker process of the local and Edge TPU backends: times one model, prints one JSON line.

    python -m mobiledets_tf.benchmark.local_worker '{"model_path": ..., "threads": 1, ...}'

Running each model in its own process keeps a crashing model or delegate from taking the whole
table down, and lets the worker pin itself to chosen CPUs without touching the caller. With
"op_profile": true the worker also times each operator alone (`local_op_profile.py`) after the model.
"""
import json
import os
import sys

import numpy as np

from mobiledets_tf import fileio
from mobiledets_tf.benchmark.interpreter_timing import time_model
from mobiledets_tf.benchmark.local_op_profile import profile_ops

RESULT_PREFIX = "MOBILEDETS_BENCHMARK_RESULT "


def main(argv) -> int:
    request = json.loads(argv[1])
    cpus = request.pop("cpus", None)
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    op_profile = request.pop("op_profile", False)
    try:
        samples_ms, details = time_model(**request)
        if op_profile:
            details["op_profile"] = profile_ops(
                fileio.read_bytes(request["model_path"]), request["threads"], request["xnnpack"],
                request["delegate"], request["delegate_options"],
                warmup_runs=min(request["warmup_runs"], 3), num_runs=min(request["num_runs"], 20),
                model_ms=float(np.median(samples_ms))).to_dict()
    except (ValueError, RuntimeError, OSError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(RESULT_PREFIX + json.dumps({"samples_ms": samples_ms, "details": details}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
