"""Flags of the benchmark harness shared by the binaries that measure models (backend, runs, devices)."""
from absl import flags

from mobiledets_tf.benchmark.harness import BACKENDS, BenchmarkOptions

_FLAGS = {}


def define_benchmark_flags(num_runs: int = 50) -> None:
    """Defines --backend, --threads, --warmup_runs, --num_runs, --cpus and the adb / Edge TPU flags."""
    _FLAGS.update(
        backend=flags.DEFINE_enum("backend", "local", list(BACKENDS), "Where to run the models."),
        threads=flags.DEFINE_integer("threads", 1, "Interpreter / benchmark_model threads."),
        warmup_runs=flags.DEFINE_integer("warmup_runs", 10, "Untimed runs before timing."),
        num_runs=flags.DEFINE_integer("num_runs", num_runs, "Timed runs per model and target."),
        cpus=flags.DEFINE_list("cpus", [], "local: pin each measurement to these CPU numbers (e.g. 1)."),
        benchmark_binary=flags.DEFINE_string("benchmark_binary", None,
                                             "adb: TFLite's benchmark_model built for the device."),
        serials=flags.DEFINE_list("serials", [], "adb: device serials (default: every attached device)."),
        cpu_mask=flags.DEFINE_string("cpu_mask", None, "adb: taskset mask in hex (default: the fastest core)."),
        adb=flags.DEFINE_string("adb", "adb", "adb: the adb executable."),
        remote_dir=flags.DEFINE_string("remote_dir", "/data/local/tmp/mobiledets",
                                       "adb: working folder on the device."),
        edgetpu_library=flags.DEFINE_string("edgetpu_library", None,
                                            "edgetpu: path of libedgetpu.so.1 (default: the loader's)."),
        op_profile=flags.DEFINE_bool(
            "op_profile", False, "Also a per-op-type latency table (op, count, total ms, share) for each "
            "model: adb: benchmark_model --enable_op_profiling=true; local: each operator timed alone as "
            "a one-op model with the same interpreter settings (ai-edge-litert has no op profiler)."),
    )


def backend_flag() -> str:
    return _FLAGS["backend"].value


def benchmark_options_from_flags(rounds: int = 1) -> BenchmarkOptions:
    """BenchmarkOptions of the flags; ValueError for a --cpus entry that is not a number."""
    f = {name: flag.value for name, flag in _FLAGS.items()}
    try:
        cpus = [int(c) for c in f["cpus"]]
    except ValueError:
        raise ValueError(f"--cpus must be CPU numbers such as 1 or 0,1, got {','.join(f['cpus'])}") from None
    return BenchmarkOptions(threads=f["threads"], warmup_runs=f["warmup_runs"], num_runs=f["num_runs"],
                            cpus=cpus, rounds=rounds, benchmark_binary=f["benchmark_binary"],
                            serials=f["serials"], cpu_mask=f["cpu_mask"], adb=f["adb"],
                            remote_dir=f["remote_dir"], edgetpu_library=f["edgetpu_library"],
                            op_profile=f["op_profile"])
