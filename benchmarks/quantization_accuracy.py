"""Benchmark: COCO accuracy of one trained detector as Keras float, TFLite float32 / float16 /
int8 (post-training quantization) and int8 after quantization-aware training, measured in one run.

    python benchmarks/quantization_accuracy.py --float_model_dir=runs/quickstart/float [--qat_steps=600]
    python benchmarks/quantization_accuracy.py        # trains the quickstart model first

Runs the package's binaries one after the other, exactly as a user would:
mobiledets-eval (Keras float) -> mobiledets-train --quantization=qat --init_checkpoint=FLOAT ->
mobiledets-export (float32,float16,int8 from the float checkpoint; int8_qat from the QAT one;
regular per-class NMS by default, like the Keras evaluation's postprocess) ->
mobiledets-eval --tflite for each file. Writes a Markdown table (AP, AP50, AP50 change against the
Keras float model, file size) with the machine, versions and commands to
benchmarks/results/quantization_accuracy.md.
"""
import datetime
import json
import os
import platform
import subprocess
import sys

import yaml
from absl import app, flags

from mobiledets_tf import fileio

FLOAT_MODEL_DIR = flags.DEFINE_string("float_model_dir", None,
                                      "A trained float run (default: train the quickstart recipe).")
CONFIG = flags.DEFINE_string("config", "configs/experiments/quickstart.yaml", "Recipe to train when "
                             "--float_model_dir is not given.")
WORK_DIR = flags.DEFINE_string("work_dir", "runs/quantization_accuracy", "Where runs and exports go.")
QAT_STEPS = flags.DEFINE_integer("qat_steps", 600, "Quantization-aware fine-tuning steps.")
QAT_LEARNING_RATE = flags.DEFINE_float("qat_learning_rate", 0.0005, "Peak QAT learning rate (cosine).")
NMS = flags.DEFINE_enum("nms", "regular", ["fast", "regular"], "NMS of the exported models: regular "
                        "(per-class, as the Keras evaluation does) compares like with like.")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "quantization_accuracy.md")


def run(name: str, *args) -> None:
    print("$ mobiledets-" + name + " " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", f"mobiledets_tf.bin.{name}", *args], check=True)


def metrics(path: str) -> dict:
    return json.loads(fileio.read_text(path))


def main(argv):
    del argv
    work = WORK_DIR.value
    float_dir = FLOAT_MODEL_DIR.value or os.path.join(work, "float")
    commands = []
    if not FLOAT_MODEL_DIR.value:
        run("train", f"--config={CONFIG.value}", f"--model_dir={float_dir}")
    qat_dir = os.path.join(work, "qat")
    export_dir = os.path.join(work, "export")
    steps = [
        ("eval", f"--model_dir={float_dir}", f"--output_dir={work}/eval_keras_float"),
        ("train", f"--config={float_dir}/config.yaml", f"--model_dir={qat_dir}", "--quantization=qat",
         f"--init_checkpoint={float_dir}",
         f"--override=train.steps={QAT_STEPS.value},train.base_learning_rate={QAT_LEARNING_RATE.value},"
         f"train.warmup_steps=0,train.checkpoint_every={QAT_STEPS.value},train.image_summary_every={QAT_STEPS.value}"),
        ("export", f"--model_dir={float_dir}", f"--output_dir={export_dir}", "--precision=float32,float16,int8",
         f"--nms={NMS.value}"),
        ("export", f"--model_dir={qat_dir}", f"--output_dir={export_dir}", "--precision=int8_qat", "--nosaved_model",
         f"--nms={NMS.value}"),
    ]
    for step in steps:
        run(*step)
        commands.append("mobiledets-" + " ".join(step))
    model = yaml.safe_load(fileio.read_text(os.path.join(float_dir, "config.yaml")))["model"]
    stem = f"{model['arch']}_{model['input_size']}"
    rows = [("Keras float32", metrics(f"{work}/eval_keras_float/metrics.json"), None)]
    for precision in ("float32", "float16", "int8", "int8_qat"):
        path = os.path.join(export_dir, f"{stem}_{precision}.tflite")
        out = os.path.join(work, f"eval_{precision}")
        step = ("eval", f"--model_dir={qat_dir if precision == 'int8_qat' else float_dir}", f"--tflite={path}",
                f"--output_dir={out}")
        run(*step)
        commands.append("mobiledets-" + " ".join(step))
        rows.append((f"TFLite {precision}", metrics(os.path.join(out, "metrics.json")), fileio.getsize(path)))
    write_table(rows, commands, model)


def write_table(rows, commands, model) -> None:
    import tensorflow as tf  # only for its version
    reference = rows[0][1]["AP50"]
    lines = [f"## {datetime.date.today()} — {model['arch']} {model['input_size']}x{model['input_size']}, "
             f"depth multiplier {model['depth_multiplier']}, built-in validation split, "
             f"{NMS.value} NMS in the .tflite files",
             "", f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"Python {platform.python_version()}, TensorFlow {tf.__version__}.", "",
             "| model | AP | AP50 | AP50 change (points) | file size |", "|---|---|---|---|---|"]
    for name, m, size in rows:
        change = "" if size is None else f"{100 * (m['AP50'] - reference):+.2f}"
        lines.append(f"| {name} | {m['AP']:.3f} | {m['AP50']:.3f} | {change} | "
                     f"{'' if size is None else f'{size / 1e6:.2f} MB'} |")
    lines += ["", "Commands:", "```"] + commands + ["```", ""]
    text = "\n".join(lines)
    print(text)
    fileio.makedirs(os.path.dirname(RESULTS))
    fileio.append_text(RESULTS, text + "\n")


if __name__ == "__main__":
    app.run(main)
