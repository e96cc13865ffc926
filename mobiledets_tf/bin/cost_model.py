"""mobiledets-cost-model: fit, evaluate and query the TuNAS linear latency cost model.

    mobiledets-cost-model fit --data=runs/latency/cpu.jsonl --holdout=50 --output=runs/latency/cpu_cost.json
    mobiledets-cost-model eval --model=runs/latency/cpu_cost.json --data=runs/latency/more.jsonl
    mobiledets-cost-model predict --model=configs/cost_models/ibn_fused_tucker_cpu.json --arch=mobiledet_cpu
    mobiledets-cost-model measure --model=configs/cost_models/ibn_fused_tucker_cpu.json \
        --arch=runs/search/searched_arch.yaml,mobiledet_cpu --cpus=1

    mobiledets-cost-model fit --base=configs/cost_models/ibn_fused_tucker_cpu.json --data=runs/latency/20.jsonl \
        --holdout=0 --output=runs/latency/cpu_cost.json

`fit` pools one or more latency datasets (mobiledets-latency-data) measured with the same settings,
keeps --holdout random architectures aside, fits on the rest and reports the held-out mean absolute
percentage error, R^2, Kendall tau and the share predicted within +-10% (also written into the model
file), with a predicted-vs-measured plot next to --output (eval writes its plot to --output, by default
`<data>_eval.png` in the current folder); with --base it rescales that model instead (one factor from
the data, `cost_model.rescale`: between the README's two x86 CPUs, 10 timed architectures sufficed).
--statistic chooses which figure of each architecture's timed runs is fitted (the dataset's median by
default, or the minimum). `eval` scores a model on other data; `predict` gives the predicted latency of
ArchSpecs (names or files) that lie in the model's space; `measure` also exports and times them exactly
as the model's latency data was measured (precision, input size, classes, backend, target, threads,
statistic from the model file; the device flags --cpus, --serials, ... from the command line) and prints
the prediction error.
"""
import contextlib
import dataclasses
import json
import os
import sys
import tempfile

from absl import app, flags

from mobiledets_tf.arch import load_arch
from mobiledets_tf.benchmark.adb import AdbError
from mobiledets_tf.bin.benchmark_flags import backend_flag, benchmark_options_from_flags, define_benchmark_flags
from mobiledets_tf.export.edgetpu import CompilerNotFoundError
from mobiledets_tf.fileio import write_text_atomically
from mobiledets_tf.benchmark.latency import LATENCY_STATISTICS
from mobiledets_tf.search.cost_model import (CostModel, CostModelError, check_compatible, evaluate, evaluate_scaled,
                                             fit, measured_with, rescale, split_holdout, with_statistic)
from mobiledets_tf.search.cost_model_plot import plot_predictions
from mobiledets_tf.search.latency_data import CollectionSettings, measure_architectures, read_dataset
from mobiledets_tf.search.space import SearchSpaceError, load_space

COMMANDS = ("fit", "eval", "predict", "measure")
DATA = flags.DEFINE_list("data", [], "Latency datasets (JSONL from mobiledets-latency-data).")
OUTPUT = flags.DEFINE_string("output", None, "fit: the cost model file to write (JSON); eval: the plot to "
                              "write (default: <first data file's name>_eval.png in the current folder).")
MODEL = flags.DEFINE_string("model", None, "eval / predict: a cost model file.")
BASE = flags.DEFINE_string(
    "base", None, "fit: instead of fitting a new model, rescale this one to the data's device: its predictions "
    "times the median measured/predicted ratio of the data (a few timed architectures of another CPU of the "
    "same kind; the statistic is the base model's).")
HOLDOUT = flags.DEFINE_integer("holdout", 50, "fit: architectures kept aside to evaluate the fit.")
RIDGE = flags.DEFINE_float("ridge", None, "fit: ridge strength (default: chosen by 5-fold cross-validation).")
POOLING = flags.DEFINE_bool(
    "pooling", True, "fit: shrink each layer's op cost towards the same op in its stage and in the whole "
    "backbone (fewer architectures needed); --nopooling fits the plain one-hot ridge model.")
SEED = flags.DEFINE_integer("seed", 0, "fit: which architectures are held out.")
STATISTIC = flags.DEFINE_enum(
    "statistic", "typical", list(LATENCY_STATISTICS), "fit: the latency statistic of each architecture's "
    "timed runs to fit: typical (the dataset's figure: median, or mean over adb), median, mean or min "
    "(steadiest on a shared machine). eval and measure use the model's.")
ARCH = flags.DEFINE_list("arch", [], "predict / measure: ArchSpec names or files, comma-separated.")
WORK_DIR = flags.DEFINE_string("work_dir", None, "measure: where the exported models go "
                               "(default: a temporary folder, removed afterwards).")
ROUNDS = flags.DEFINE_integer("rounds", 2, "measure: interleaved passes over the models, samples pooled.")
MEASURE_OUTPUT = flags.DEFINE_string("measure_output", None, "measure: also write the results as JSON here.")
define_benchmark_flags(num_runs=30)
PLOT = flags.DEFINE_bool("plot", True, "fit / eval: write a predicted-vs-measured PNG.")


def load_datasets(paths):
    """(header of the first file, pooled rows) of datasets measured with the same settings."""
    if not paths:
        raise CostModelError("give --data=FILE.jsonl[,FILE.jsonl...]")
    loaded = [(path, *read_dataset(path)) for path in paths]
    check_compatible([(path, header) for path, header, _ in loaded])
    rows = [row for _, _, file_rows in loaded for row in file_rows]
    return loaded[0][1], rows


def space_of(header):
    return load_space(header["space_source"], header["platform"], skeleton=header["skeleton"],
                      space=header["space"])


def print_metrics(title, metrics):
    print(title)
    for line in metrics.lines():
        print("  " + line)


def run_fit():
    if not OUTPUT.value:
        raise CostModelError("fit: give --output=FILE.json")
    base = CostModel.load(BASE.value) if BASE.value else None
    statistic = base.statistic if base and not flags.FLAGS["statistic"].present else STATISTIC.value
    header, all_rows = load_datasets(DATA.value)
    rows = with_statistic(all_rows, statistic)
    errors = len(all_rows) - len(rows)
    space = space_of(header)
    train_rows, held_rows = split_holdout(rows, HOLDOUT.value, SEED.value)
    if base:
        model = rescale(base, space, train_rows, measured_with(header, rows, statistic))
        how = f"{BASE.value} times {model.rescaled_from['scale']:.4f}, the median measured/predicted ratio of"
        detail = ""
    else:
        model = fit(space, train_rows, measured_with(header, rows, statistic), ridge=RIDGE.value,
                    seed=SEED.value, pooling=POOLING.value)
        how = f"{space.cost_features.size} features; fitted on"
        detail = f"; ridge {model.ridge:g}{', pooled' if model.pooling else ''}"
    print(f"{model.describe()}\n{how} {len(train_rows)} architectures, {len(held_rows)} held out, {errors} rows "
          f"without a latency skipped{detail}")
    print_metrics("training fit", model.metrics_of("train"))
    groups = [("train", model.predict_many(space, [r["indices"] for r in train_rows]),
               [r["latency_ms"] for r in train_rows])]
    if held_rows:
        held = evaluate(model, space, held_rows)
        model.record_metrics("holdout", held)
        print_metrics("held-out architectures", held)
        groups.append(("held out", model.predict_many(space, [r["indices"] for r in held_rows]),
                       [r["latency_ms"] for r in held_rows]))
    model.save(OUTPUT.value)
    print(f"cost model: {OUTPUT.value}")
    if PLOT.value:
        plot = os.path.splitext(OUTPUT.value)[0] + ".png"
        plot_predictions(groups, plot, f"cost model {model.describe()}")
        print(f"plot: {plot}")


def run_eval():
    model = load_model()
    header, rows = load_datasets(DATA.value)
    rows = with_statistic(rows, model.statistic)
    space = space_of(header)
    metrics = evaluate(model, space, rows)
    print(f"cost model {model.describe()}")
    print_metrics(f"on {', '.join(DATA.value)}", metrics)
    ratio, scaled = evaluate_scaled(model, space, rows)
    print_metrics(f"up to one scale factor (predictions times {ratio:.3f}, the median measured/predicted)", scaled)
    if PLOT.value:
        plot = OUTPUT.value or os.path.splitext(os.path.basename(DATA.value[0]))[0] + "_eval.png"
        plot_predictions([("data", model.predict_many(space, [r["indices"] for r in rows]),
                           [r["latency_ms"] for r in rows])], plot, f"cost model {model.describe()}")
        print(f"plot: {plot}")


def architectures_of_flag(space):
    """{ArchSpec name: choice indices in `space`} of --arch."""
    if not ARCH.value:
        raise CostModelError("give --arch=NAME_OR_FILE[,NAME_OR_FILE...]")
    archs = [load_arch(a) for a in ARCH.value]
    names = [a.name for a in archs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CostModelError(f"--arch names {', '.join(duplicates)} more than once")
    return {a.name: space.indices_of(a) for a in archs}


def run_predict():
    model = load_model()
    space = model.space()
    for name, indices in architectures_of_flag(space).items():
        print(f"{name}: {model.predict(space, indices):.2f} ms predicted ({model.describe()})")


def run_measure():
    model = load_model()
    space = model.space()
    architectures = architectures_of_flag(space)
    settings = settings_of_model(model)
    print(f"measuring {len(architectures)} architecture(s) as the cost model's data was: {model.describe()}")
    with contextlib.ExitStack() as stack:
        work_dir = WORK_DIR.value or stack.enter_context(tempfile.TemporaryDirectory(prefix="cost_model_"))
        measurements = measure_architectures(settings, space, architectures, work_dir,
                                             benchmark_options_from_flags())
    results = []
    for name, indices in architectures.items():
        m, predicted = measurements[name], model.predict(space, indices)
        result = {"arch": name, "predicted_ms": predicted, "device": m.device, "error": m.error or None,
                  "statistic": model.statistic,
                  "measured_ms": m.latency.statistic_ms(model.statistic) if m.ok else None}
        if m.ok:
            result["stats"] = dataclasses.asdict(m.latency)   # every statistic of the timed runs
            result["prediction_error_percent"] = 100 * (predicted - result["measured_ms"]) / result["measured_ms"]
            statistic = "" if model.statistic == "typical" else f" ({model.statistic})"
            print(f"{name}: measured {result['measured_ms']:.2f} ms{statistic}, predicted {predicted:.2f} ms "
                  f"({result['prediction_error_percent']:+.1f}%)")
        else:
            print(f"{name}: not measured: {m.error}")
        results.append(result)
    if MEASURE_OUTPUT.value:
        write_text_atomically(MEASURE_OUTPUT.value, json.dumps(results, indent=1) + "\n")
        print(f"results: {MEASURE_OUTPUT.value}")
    if any(r["error"] for r in results):
        raise CostModelError("some architectures could not be measured (see above)")


def settings_of_model(model):
    """The latency-data settings the model was fitted on; runs and rounds may come from the flags."""
    m = model.measured_with
    if flags.FLAGS["backend"].present and backend_flag() != m["backend"]:
        raise CostModelError(f"--backend={backend_flag()}, but the cost model was measured with "
                             f"backend {m['backend']}: measure on the model's backend")
    options = benchmark_options_from_flags()
    return CollectionSettings(
        space=m["space_source"], platform=m["platform"], skeleton=m["skeleton"], precision=m["precision"],
        input_size=m["input_size"], num_classes=m["num_classes"], depth_multiplier=m["depth_multiplier"],
        backend=m["backend"], target=m["target"], threads=m["threads"], warmup_runs=options.warmup_runs,
        num_runs=options.num_runs, rounds=ROUNDS.value)


def load_model():
    if not MODEL.value:
        raise CostModelError("give --model=FILE.json")
    return CostModel.load(MODEL.value)


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        sys.exit(f"usage: mobiledets-cost-model {{{'|'.join(COMMANDS)}}} [flags]; see --help")
    try:
        {"fit": run_fit, "eval": run_eval, "predict": run_predict, "measure": run_measure}[argv[1]]()
    except (CostModelError, SearchSpaceError, ValueError, FileNotFoundError, AdbError, CompilerNotFoundError) as e:
        sys.exit(f"mobiledets-cost-model {argv[1]}: {e}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
