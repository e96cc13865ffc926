"""Running Coral's `edgetpu_compiler` and reading what it prints into a `CompatibilityReport`.

`compile_model` runs `edgetpu_compiler -s -o OUT_DIR [-m MIN_RUNTIME] [-n NUM_SEGMENTS] [-t TIMEOUT]
MODEL`, saves everything the compiler prints to `OUT_DIR/<model>.edgetpu_compiler.log` and parses it.
The compiler reads and writes local files only: a model or an OUT_DIR given as a URL is staged
through a local temporary folder.
`parse_compiler_log` reads both the compiler's output and the operation log it writes next to the
compiled model (`<model>_edgetpu.log`, with `Input:`/`Output:` headers), including the failures it
reports instead of a table ("Model not quantized", "Didn't find op for builtin opcode ...",
"Internal compiler error. Aborting!", static-size failures). The compiler is only distributed for
x86-64 Linux; without it, `CompilerNotFoundError` says so and the caller keeps the prediction of
`mobiledets_tf.export.compatibility.build_report`.
"""
import dataclasses
import os
import re
import shutil
import subprocess
from typing import Dict, List, Optional, Tuple

from mobiledets_tf import fileio
from mobiledets_tf.export.compatibility import (
    COMPILER, MAPPED, CompatibilityReport, CompiledSegment, OpRow)

COMPILER_NAME = "edgetpu_compiler"
NOT_ON_PATH = (f"{COMPILER_NAME} is not on PATH: install it from Coral's apt repository "
               "(package edgetpu-compiler, x86-64 Linux only); the prediction of the report is "
               "based on the documented rules")


class CompilerNotFoundError(FileNotFoundError):
    """The Edge TPU compiler is not installed (or the given path is not an executable)."""


@dataclasses.dataclass
class CompileResult:
    command: List[str]
    returncode: int
    out_dir: str
    log_path: str
    report: CompatibilityReport

    @property
    def output_paths(self) -> List[str]:
        """The compiled models (one per segment) in `out_dir`."""
        return [os.path.join(self.out_dir, os.path.basename(s.output_model))
                for s in self.report.segments if s.output_model]


def find_compiler(compiler: Optional[str] = None) -> str:
    """The path of `compiler` (a path or a command name; default: edgetpu_compiler on PATH)."""
    if compiler is None:
        found = shutil.which(COMPILER_NAME)
        if found is None:
            raise CompilerNotFoundError(NOT_ON_PATH)
        return found
    if os.path.isfile(compiler) and os.access(compiler, os.X_OK):
        return os.path.abspath(compiler)
    found = shutil.which(compiler)
    if found is None:
        raise CompilerNotFoundError(f"{compiler} is not an executable file or a command on PATH")
    return found


def compiler_command(compiler: str, model_path: str, out_dir: str, min_runtime: Optional[int] = None,
                     num_segments: Optional[int] = None,
                     timeout_sec: Optional[int] = None) -> List[str]:
    command = [compiler, "-s", "-o", out_dir]
    for flag, value in (("-m", min_runtime), ("-n", num_segments), ("-t", timeout_sec)):
        if value is not None:
            command += [flag, str(value)]
    return command + [model_path]


def compiler_log_path(model_path: str, out_dir: str) -> str:
    stem = os.path.splitext(os.path.basename(model_path))[0]
    return os.path.join(out_dir, f"{stem}.edgetpu_compiler.log")


def compile_model(model_path: str, out_dir: str, compiler: Optional[str] = None,
                  min_runtime: Optional[int] = None, num_segments: Optional[int] = None,
                  timeout_sec: Optional[int] = None) -> CompileResult:
    """Compiles a .tflite model for the Edge TPU into `out_dir` and parses what the compiler says.

    A failed compilation is not an exception: the report then has `compiled=False` and the errors.
    Raises CompilerNotFoundError when the compiler is not installed.
    """
    compiler = find_compiler(compiler)
    with fileio.local_copy(model_path) as local_model, fileio.local_output_dir(out_dir) as local_out:
        command = compiler_command(compiler, local_model, local_out, min_runtime, num_segments, timeout_sec)
        process = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 check=False)
    log_path = compiler_log_path(model_path, out_dir)
    fileio.write_text_atomically(log_path, process.stdout)
    report = parse_compiler_log(process.stdout, model=model_path)
    report.compiled = report.compiled and process.returncode == 0
    if process.returncode != 0 and not report.errors:
        report.errors.append(f"{COMPILER_NAME} exited with status {process.returncode}")
    return CompileResult(command=command, returncode=process.returncode, out_dir=out_dir,
                         log_path=log_path, report=report)


# ----------------------------------------------------------------------------- log parsing

VERSION_RE = re.compile(r"^Edge TPU Compiler version (\S+)")
COMPILED_RE = re.compile(r"^Model compiled successfully in (\d+) ms")
TABLE_HEADER_RE = re.compile(r"^Operator\s+Count\s+Status$")
TABLE_ROW_RE = re.compile(r"^(\S+)\s+(\d+)\s+(\S.*)$")
SEGMENT_FIELDS = {  # "label: value" lines -> (CompiledSegment field, converter)
    "Input model": ("input_model", str),
    "Input": ("input_model", str),
    "Input size": ("input_size", str),
    "Output model": ("output_model", str),
    "Output": ("output_model", str),
    "Output size": ("output_size", str),
    "On-chip memory used for caching model parameters": ("on_chip_memory_used", str),
    "On-chip memory remaining for caching model parameters": ("on_chip_memory_remaining", str),
    "Off-chip memory used for streaming uncached model parameters": ("off_chip_memory_used", str),
    "Number of Edge TPU subgraphs": ("edgetpu_subgraphs", int),
    "Total number of operations": ("total_operations", int),
    "Operation log": ("operation_log", str),
    "Number of operations that will run on Edge TPU": ("ops_on_edgetpu", int),
    "Number of operations that will run on CPU": ("ops_on_cpu", int),
}
FATAL_PREFIXES = ("Compilation failed", "Internal compiler error")


def is_fatal(line: str) -> bool:
    return line.startswith(FATAL_PREFIXES) or "Segmentation fault" in line


def error_message(line: str) -> Optional[str]:
    """The message of an error line ("ERROR: " removed), or None for other lines."""
    if line.startswith("ERROR:"):
        return line[len("ERROR:"):].strip()
    return line if is_fatal(line) else None


class _LogReader:
    """Walks the log line by line; one CompiledSegment per compiled (or logged) model."""

    def __init__(self):
        self.version = ""
        self.segments: List[CompiledSegment] = []
        self.segment_rows: List[List[OpRow]] = []
        self.errors: List[str] = []
        self.invalid_model = ""
        self.failed = False
        self.in_table = False
        self.after_invalid_model = False

    def new_segment(self) -> CompiledSegment:
        self.segments.append(CompiledSegment())
        self.segment_rows.append([])
        return self.segments[-1]

    def current_segment(self) -> CompiledSegment:
        return self.segments[-1] if self.segments else self.new_segment()

    def read(self, line: str) -> None:
        line = line.strip()
        if self.in_table and self.read_table_row(line):
            return
        self.in_table = False
        if self.after_invalid_model and line:
            self.errors.append(line)  # the reason, e.g. "Model not quantized"
            self.after_invalid_model = False
            return
        if TABLE_HEADER_RE.match(line):
            self.in_table = True
        elif VERSION_RE.match(line):
            self.version = VERSION_RE.match(line).group(1)
        elif COMPILED_RE.match(line):
            self.new_segment().compile_time_ms = int(COMPILED_RE.match(line).group(1))
        elif line.startswith("Invalid model:"):
            self.failed, self.after_invalid_model = True, True
            self.invalid_model = line.split(":", 1)[1].strip()
        elif error_message(line) is not None:
            self.failed = self.failed or is_fatal(line)
            self.errors.append(error_message(line))
        else:
            self.read_segment_field(line)

    def read_table_row(self, line: str) -> bool:
        if not line:
            return True
        match = TABLE_ROW_RE.match(line)
        if match is None:
            return False
        op, count, status = match.groups()
        self.current_segment()
        self.segment_rows[-1].append(OpRow(op, int(count), status))
        return True

    def read_segment_field(self, line: str) -> None:
        label, _, value = line.partition(": ")
        if label not in SEGMENT_FIELDS or not value:
            return
        field, convert = SEGMENT_FIELDS[label]
        if label == "Input":  # the operation log starts a segment with its "Input:" line
            self.new_segment()
        setattr(self.current_segment(), field, convert(value.strip()))


def merged_rows(row_lists: List[List[OpRow]]) -> List[OpRow]:
    """Rows of all segments, summed per (operator, status), in order of first appearance."""
    merged: Dict[Tuple[str, str], OpRow] = {}
    for rows in row_lists:
        for row in rows:
            if (row.op, row.status) in merged:
                merged[row.op, row.status].count += row.count
            else:
                merged[row.op, row.status] = OpRow(row.op, row.count, row.status)
    return list(merged.values())


def fill_segment_totals(segment: CompiledSegment, rows: List[OpRow]) -> None:
    """The compiler omits the per-device counts when every operation maps; count the table then."""
    if segment.ops_on_edgetpu is None and rows:
        segment.ops_on_edgetpu = sum(r.count for r in rows if r.status == MAPPED)
    if segment.ops_on_cpu is None and rows:
        segment.ops_on_cpu = sum(r.count for r in rows if r.status != MAPPED)


def parse_compiler_log(text: str, model: str = "") -> CompatibilityReport:
    """The report of an edgetpu_compiler output or operation log (`model` defaults to the input)."""
    reader = _LogReader()
    for line in text.splitlines():
        reader.read(line)
    for segment, rows in zip(reader.segments, reader.segment_rows):
        fill_segment_totals(segment, rows)
    segments = reader.segments
    model = model or reader.invalid_model or (segments[0].input_model if segments else "")
    return CompatibilityReport(
        source=COMPILER, model=model, rows=merged_rows(reader.segment_rows),
        ops_on_edgetpu=sum(s.ops_on_edgetpu or 0 for s in segments),
        ops_on_cpu=sum(s.ops_on_cpu or 0 for s in segments),
        edgetpu_subgraphs=sum(s.edgetpu_subgraphs if s.edgetpu_subgraphs is not None
                              else int(bool(s.ops_on_edgetpu)) for s in segments),
        compiled=bool(segments) and not reader.failed,
        errors=reader.errors, compiler_version=reader.version, segments=segments)
