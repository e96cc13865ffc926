"""mobiledets-cost-model: fit, evaluate and query the TuNAS linear latency cost model.

    mobiledets-cost-model fit --data=runs/latency/cpu.jsonl --holdout=50 --output=runs/latency/cpu_cost.json
    mobiledets-cost-model eval --model=runs/latency/cpu_cost.json --data=runs/latency/more.jsonl
    mobiledets-cost-model predict --model=configs/cost_models/ibn_fused_tucker_cpu.json --arch=mobiledet_cpu

`fit` pools one or more latency datasets (mobiledets-latency-data) measured with the same settings,
keeps --holdout random architectures aside, fits on the rest and reports the held-out mean absolute
percentage error, R^2, Kendall tau and the share predicted within +-10% (also written into the model
file), with a predicted-vs-measured plot next to --output. `eval` scores a model on other data;
`predict` gives the predicted latency of an ArchSpec (a name or a file) that lies in the model's space.
"""
import os
import sys

from absl import app, flags

from mobiledets_tf.arch import load_arch
from mobiledets_tf.search.cost_model import (CostModel, CostModelError, check_compatible, evaluate, fit,
                                             measured_with, split_holdout)
from mobiledets_tf.search.cost_model_plot import plot_predictions
from mobiledets_tf.search.latency_data import read_dataset
from mobiledets_tf.search.space import SearchSpaceError, load_space

COMMANDS = ("fit", "eval", "predict")
DATA = flags.DEFINE_list("data", [], "Latency datasets (JSONL from mobiledets-latency-data).")
OUTPUT = flags.DEFINE_string("output", None, "fit: the cost model file to write (JSON).")
MODEL = flags.DEFINE_string("model", None, "eval / predict: a cost model file.")
HOLDOUT = flags.DEFINE_integer("holdout", 50, "fit: architectures kept aside to evaluate the fit.")
RIDGE = flags.DEFINE_float("ridge", None, "fit: ridge strength (default: chosen by 5-fold cross-validation).")
POOLING = flags.DEFINE_bool(
    "pooling", True, "fit: shrink each layer's op cost towards the same op in its stage and in the whole "
    "backbone (fewer architectures needed); --nopooling fits the plain one-hot ridge model.")
SEED = flags.DEFINE_integer("seed", 0, "fit: which architectures are held out.")
ARCH = flags.DEFINE_string("arch", None, "predict: an ArchSpec name or file.")
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
    header, rows = load_datasets(DATA.value)
    space = space_of(header)
    train_rows, held_rows = split_holdout(rows, HOLDOUT.value, SEED.value)
    model = fit(space, train_rows, measured_with(header, rows), ridge=RIDGE.value, seed=SEED.value,
                pooling=POOLING.value)
    errors = len(rows) - len(train_rows) - len(held_rows)
    print(f"{model.describe()}\n{space.num_features} features; fitted on {len(train_rows)} architectures, "
          f"{len(held_rows)} held out, {errors} rows without a latency skipped; ridge {model.ridge:g}"
          f"{', pooled' if model.pooling else ''}")
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
    space = space_of(header)
    metrics = evaluate(model, space, rows)
    print(f"cost model {model.describe()}")
    print_metrics(f"on {', '.join(DATA.value)}", metrics)
    if PLOT.value:
        measured = [r for r in rows if r.get("latency_ms") is not None]
        plot = os.path.splitext(DATA.value[0])[0] + "_eval.png"
        plot_predictions([("data", model.predict_many(space, [r["indices"] for r in measured]),
                           [r["latency_ms"] for r in measured])], plot, f"cost model {model.describe()}")
        print(f"plot: {plot}")


def run_predict():
    model = load_model()
    if not ARCH.value:
        raise CostModelError("predict: give --arch=NAME_OR_FILE")
    space = model.space()
    arch = load_arch(ARCH.value)
    latency = model.predict(space, space.indices_of(arch))
    print(f"{arch.name}: {latency:.2f} ms predicted ({model.describe()})")


def load_model():
    if not MODEL.value:
        raise CostModelError("give --model=FILE.json")
    return CostModel.load(MODEL.value)


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        sys.exit(f"usage: mobiledets-cost-model {{{'|'.join(COMMANDS)}}} [flags]; see --help")
    try:
        {"fit": run_fit, "eval": run_eval, "predict": run_predict}[argv[1]]()
    except (CostModelError, SearchSpaceError, ValueError, FileNotFoundError) as e:
        sys.exit(f"mobiledets-cost-model {argv[1]}: {e}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
