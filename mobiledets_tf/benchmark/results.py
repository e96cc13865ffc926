"""Latency table rows (a measurement plus what the model is and how accurate it is) and their files.

A row joins one `Measurement` with the model card written at export (architecture, precision,
multiply-adds, parameters) and, when known, the model's COCO AP: from an eval JSON given for that
model, or from `eval_{stem}/metrics.json` next to the .tflite (where `mobiledets-eval --tflite`
writes it). A local row also states the delegation (`delegation.py`: nodes the CPU delegate or the
given delegate took, partitions, op types left outside); with `--op_profile` a row carries its
per-op-type table (`op_profile.py`), printed under the Markdown table and kept whole in the JSON.
Tables are written as Markdown, CSV and JSON, atomically.
"""
import csv
import dataclasses
import io
import json
import os
from typing import Dict, List, Mapping, Optional, Sequence

from mobiledets_tf import fileio
from mobiledets_tf.benchmark.delegation import DelegationReport
from mobiledets_tf.benchmark.latency import Measurement
from mobiledets_tf.benchmark.op_profile import OpProfile, format_op_profile
from mobiledets_tf.export.model_card import EDGETPU_STEM_SUFFIX, load_model_card


@dataclasses.dataclass
class BenchmarkRow:
    model: str
    architecture: str
    precision: str
    input_size: Optional[int]
    backend: str
    target: str
    device: str
    threads: int
    runs: Optional[int] = None
    median_ms: Optional[float] = None
    mean_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    std_ms: Optional[float] = None
    min_ms: Optional[float] = None
    multiply_adds: Optional[int] = None
    parameters: Optional[int] = None
    ap: Optional[float] = None
    ap50: Optional[float] = None
    delegation: str = ""                  # local rows: DelegationReport.summary()
    error: str = ""
    op_profile: Optional[dict] = None     # OpProfile.to_dict(), with --op_profile

    @property
    def latency_ms(self) -> Optional[float]:
        """Median when the backend measured it, else the mean (benchmark_model reports only averages)."""
        return self.median_ms if self.median_ms is not None else self.mean_ms


FIELDS = [f.name for f in dataclasses.fields(BenchmarkRow) if f.name != "op_profile"]   # CSV columns


def model_stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def find_metrics(tflite_path: str, eval_json: Mapping[str, str]) -> Optional[str]:
    """The eval JSON given for this model (by file name or stem), else eval_{stem}/metrics.json."""
    stem = model_stem(tflite_path)
    stems = [stem] + ([stem[:-len(EDGETPU_STEM_SUFFIX)]] if stem.endswith(EDGETPU_STEM_SUFFIX) else [])
    for key in [os.path.basename(tflite_path), *stems]:
        if key in eval_json:
            return eval_json[key]
    for candidate in stems:
        path = os.path.join(os.path.dirname(tflite_path), f"eval_{candidate}", "metrics.json")
        if fileio.exists(path):
            return path
    return None


def read_ap(metrics_path: str) -> Dict[str, float]:
    metrics = json.loads(fileio.read_text(metrics_path))
    if "AP" not in metrics:
        raise ValueError(f"{metrics_path}: not a metrics.json of mobiledets-eval (no 'AP')")
    return {"ap": float(metrics["AP"]), "ap50": float(metrics.get("AP50", float("nan")))}


def make_rows(measurements: Sequence[Measurement], eval_json: Mapping[str, str] = {}) -> List[BenchmarkRow]:
    rows = []
    for m in measurements:
        row = BenchmarkRow(model=os.path.basename(m.model_path), architecture="", precision="",
                           input_size=None, backend=m.backend, target=m.target, device=m.device,
                           threads=m.threads, error=m.error)
        try:
            card = load_model_card(m.model_path)
            row.architecture, row.precision, row.input_size = card.architecture, card.precision, card.input_size
            row.multiply_adds, row.parameters = card.multiply_adds, card.parameters
        except (OSError, ValueError) as e:
            row.error = row.error or f"cannot read the model: {e}"
        metrics = find_metrics(m.model_path, eval_json)
        if metrics:
            for key, value in read_ap(metrics).items():
                setattr(row, key, value)
        if m.latency is not None:
            s = m.latency
            row.runs, row.median_ms, row.mean_ms, row.p90_ms = s.count, s.median_ms, s.mean_ms, s.p90_ms
            row.std_ms, row.min_ms = s.std_ms, s.min_ms
        if "delegation" in m.details:
            row.delegation = DelegationReport(**m.details["delegation"]).summary()
        row.op_profile = m.details.get("op_profile")
        if "op_profile_error" in m.details:
            row.error = row.error or f"no op profile: {m.details['op_profile_error']}"
        rows.append(row)
    return rows


def _cell(value, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_markdown(rows: Sequence[BenchmarkRow], title: str = "", notes: Sequence[str] = ()) -> str:
    header = ["model", "architecture", "precision", "input", "backend", "target", "device", "threads",
              "runs", "median ms", "mean ms", "p90 ms", "std ms", "min ms", "MAdds (B)", "params (M)",
              "AP", "AP50", "delegation", "error"]
    lines = ([f"# {title}", ""] if title else []) + [f"{note}  " for note in notes] + ([""] if notes else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r.model, r.architecture, r.precision, _cell(r.input_size), r.backend, r.target, r.device,
                 _cell(r.threads), _cell(r.runs), _cell(r.median_ms), _cell(r.mean_ms), _cell(r.p90_ms),
                 _cell(r.std_ms), _cell(r.min_ms),
                 _cell(r.multiply_adds / 1e9 if r.multiply_adds else None, 3),
                 _cell(r.parameters / 1e6 if r.parameters else None, 2),
                 _cell(r.ap, 3), _cell(r.ap50, 3), r.delegation,
                 r.error.replace("|", "\\|").replace("\n", " ")]
        lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        if r.op_profile:
            lines += ["", f"## Latency per op type: {r.model} ({r.target}, {r.device})", "",
                      *format_op_profile(OpProfile.from_dict(r.op_profile))]
    return "\n".join(lines) + "\n"


def format_csv(rows: Sequence[BenchmarkRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in dataclasses.asdict(row).items()
                         if k in FIELDS})
    return out.getvalue()


def format_json(rows: Sequence[BenchmarkRow], context: Mapping = {}) -> str:
    return json.dumps({**context, "rows": [dataclasses.asdict(r) for r in rows]}, indent=2) + "\n"


def write_tables(rows: Sequence[BenchmarkRow], output_stem: str, title: str = "",
                 context: Mapping[str, str] = {}) -> List[str]:
    """Writes OUTPUT_STEM.md, .csv and .json; `context` (machine, versions, command) heads each."""
    notes = [f"{key}: {value}" for key, value in context.items()]
    files = {".md": format_markdown(rows, title, notes), ".csv": format_csv(rows),
             ".json": format_json(rows, dict(context))}
    for suffix, text in files.items():
        fileio.write_text_atomically(output_stem + suffix, text)
    return [output_stem + suffix for suffix in files]


def read_rows(json_path: str) -> List[BenchmarkRow]:
    return [BenchmarkRow(**row) for row in json.loads(fileio.read_text(json_path))["rows"]]
