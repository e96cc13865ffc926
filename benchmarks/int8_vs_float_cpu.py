"""Benchmark: int8 against float32 on this CPU, for this code's exports and a baseline's, in one run.

    # the baseline: exports of an earlier commit, made with that commit's own code
    git worktree add /tmp/baseline COMMIT
    (cd /tmp/baseline && PYTHONPATH=/tmp/baseline python benchmarks/latency_table.py --export_only \
        --work_dir=/tmp/baseline_models)
    python benchmarks/int8_vs_float_cpu.py --baseline_dir=/tmp/baseline_models --baseline_commit=COMMIT

Exports the eight detectors of `latency_table.py` (untrained weights, 320x320, 90 classes; `latency_table.py --export_only`
in a child process) at float32 and int8, then times them and the baseline's files with the package's
local backend in interleaved rounds (1 thread, XNNPACK, pinned to one CPU, samples pooled per model),
so that both sets see the same machine. Writes benchmarks/results/{name}.md with, per architecture,
the int8/float32 ratio before and after, each precision's latency against the baseline's, and the
delegation report of every file (how many operators XNNPACK took, in how many partitions, and which
op types it left to the interpreter); the harness's own table is written beside it
({name}_rows.md/.csv/.json).
"""
import os
import subprocess
import sys
import time

from absl import app, flags

ARCHITECTURES = ("mobiledet_cpu", "mobiledet_edgetpu", "mobiledet_dsp", "mobiledet_gpu",
                 "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "mnasnet_a1")
PRECISIONS = ("float32", "int8")
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
LATENCY_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "latency_table.py")

WORK_DIR = flags.DEFINE_string("work_dir", "runs/int8_vs_float", "Where this code's exports go.")
BASELINE_DIR = flags.DEFINE_string("baseline_dir", None, "Exports of the baseline, laid out as "
                                   "latency_table.py --export_only writes them (ARCH/ARCH_320_PRECISION.tflite).")
BASELINE_COMMIT = flags.DEFINE_string("baseline_commit", "", "The commit the baseline was exported with.")
REUSE_MODELS = flags.DEFINE_bool("reuse_models", False, "Measure the models a previous run exported.")
ROUNDS = flags.DEFINE_integer("rounds", 8, "Interleaved passes over all models; samples pooled per model.")
NUM_RUNS = flags.DEFINE_integer("num_runs", 30, "Timed runs per model and round.")
WARMUP_RUNS = flags.DEFINE_integer("warmup_runs", 10, "Untimed runs per model and round.")
CPU = flags.DEFINE_integer("cpu", None, "Pin measurements to this CPU (default: the last one).")
NAME = flags.DEFINE_string("name", "int8_vs_float_cpu", "Result file stem under benchmarks/results/.")
ARCHS = flags.DEFINE_list("archs", list(ARCHITECTURES), "Architectures to compare (a baseline exported by an "
                          "older commit may hold fewer of them).")


def model_path(root: str, arch: str, precision: str) -> str:
    return os.path.join(root, arch, f"{arch}_320_{precision}.tflite")


def main(argv):
    del argv
    from mobiledets_tf import fileio
    from mobiledets_tf.benchmark.harness import BenchmarkOptions, run_benchmark
    from mobiledets_tf.benchmark.local import cpu_name, vector_extensions
    from mobiledets_tf.benchmark.targets import parse_targets

    if not BASELINE_DIR.value:
        sys.exit("give --baseline_dir (see the module docstring)")
    started = time.time()
    if not REUSE_MODELS.value:
        subprocess.run([sys.executable, LATENCY_TABLE, "--export_only", f"--work_dir={WORK_DIR.value}",
                        f"--precisions={','.join(PRECISIONS)}"], check=True)
    unknown = sorted(set(ARCHS.value) - set(ARCHITECTURES))
    if unknown:
        sys.exit(f"unknown --archs {', '.join(unknown)}; choose from {', '.join(ARCHITECTURES)}")
    sets = {"baseline": BASELINE_DIR.value, "this code": WORK_DIR.value}
    keys = [(name, arch, precision) for arch in ARCHS.value for precision in PRECISIONS for name in sets]
    paths = [model_path(sets[name], arch, precision) for name, arch, precision in keys]
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        sys.exit("missing exports: " + ", ".join(missing))
    cpu = CPU.value if CPU.value is not None else os.cpu_count() - 1
    options = BenchmarkOptions(threads=1, warmup_runs=WARMUP_RUNS.value, num_runs=NUM_RUNS.value, cpus=[cpu],
                               rounds=ROUNDS.value)
    rows = run_benchmark(paths, "local", parse_targets(["cpu"], "local"), RESULTS_DIR, NAME.value + "_rows",
                         options, title="int8 vs float32 on this CPU: every model of both sets", plot=False,
                         extra_context={"command": "python " + " ".join(sys.argv)})
    failed = [row for row in rows if row.error]
    if failed:
        sys.exit("could not measure: " + "; ".join(f"{r.model}: {r.error}" for r in failed))
    by_key = dict(zip(keys, rows))

    def ms(name, arch, precision):
        return by_key[(name, arch, precision)].median_ms

    lines = ["# int8 vs float32 on this CPU, before and after", "",
             f"CPU: {cpu_name()} ({os.cpu_count()} CPUs), vector extensions: {vector_extensions()}  ",
             f"Command: python {' '.join(sys.argv)}  ",
             f"Baseline: {os.path.abspath(BASELINE_DIR.value)}"
             + (f", exported by commit {BASELINE_COMMIT.value}" if BASELINE_COMMIT.value else "") + "  ",
             f"Protocol: local backend, 1 thread, XNNPACK, pinned to CPU {cpu}, {ROUNDS.value} interleaved rounds "
             f"of {NUM_RUNS.value} timed runs (after {WARMUP_RUNS.value} warm-up runs) pooled per model; "
             "medians in ms; untrained weights, 320x320, 90 classes.", "",
             "| architecture | float32 before | float32 after | after/before | int8 before | int8 after | "
             "after/before | int8/float32 before | int8/float32 after |", "|---|---|---|---|---|---|---|---|---|"]
    for arch in ARCHS.value:
        f_old, f_new = ms("baseline", arch, "float32"), ms("this code", arch, "float32")
        i_old, i_new = ms("baseline", arch, "int8"), ms("this code", arch, "int8")
        lines.append(f"| {arch} | {f_old:.2f} | {f_new:.2f} | {f_new / f_old:.3f} | {i_old:.2f} | {i_new:.2f} | "
                     f"{i_new / i_old:.3f} | {i_old / f_old:.3f} | {i_new / f_new:.3f} |")
    lines += ["", "## Delegation to XNNPACK (from the interpreter's node list after delegation)", "",
              "| model | set | delegation |", "|---|---|---|"]
    for (name, arch, precision), row in by_key.items():
        lines.append(f"| {row.model} | {name} | {row.delegation} |")
    lines += ["", f"Wall time: {(time.time() - started) / 60:.1f} min."]
    text = "\n".join(lines) + "\n"
    fileio.write_text_atomically(os.path.join(RESULTS_DIR, NAME.value + ".md"), text)
    print(text)


if __name__ == "__main__":
    app.run(main)
