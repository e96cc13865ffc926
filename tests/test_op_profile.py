"""Per-op-type latency (mobiledets_tf/benchmark/op_profile.py) from benchmark_model --enable_op_profiling=true,
and the adb backend's op_profile option through the stand-in adb of tests/test_benchmark_adb.py."""
# Where the format comes from (read for these tests):
#   * tensorflow/tensorflow, tensorflow/lite/tools/benchmark/profiling_listener.cc: ProfilingListener::OnBenchmarkEnd
#     writes "Profiling Info for Benchmark Initialization:" and then "Operator-wise Profiling Info for Regular
#     Benchmark Runs:", each followed by its summarizer's tables, through TFLITE_LOG(INFO) (so only the header
#     line gets "INFO: " in builds whose logger prefixes). Regular-run profiling starts in
#     OnSingleRunStart(REGULAR): warm-up runs are not profiled.
#   * tensorflow/tensorflow, tensorflow/core/util/stats_calculator.cc (older builds) and
#     third_party/xla/xla/tsl/util/stats_calculator.cc (newer): GetOutputString prints "Run Order", "Top by
#     Computation Time", then GetStatsByNodeType: "Number of nodes executed: N", "==== Summary by node type ====",
#     the columns [Node type] [count] [avg ms] [avg %] [cdf %] [mem KB] [times called], each field a tab then
#     setw(width) (node type width 24 in the older file, whose Run Order also has a [start] column; 40 in the
#     newer). [count] = nodes of the type, [avg ms] = sum over them of (total time / number of runs), [times
#     called] = calls per run; rows sorted by time. Then "Timings (microseconds): count=..." per profile.
#   * tensorflow/tensorflow, tensorflow/lite/profiling/profile_summarizer.cc and profile_summary_formatter.cc:
#     node type = the kernel's name (builtin op, custom op, or a delegate node such as TfLiteXNNPackDelegate;
#     the delegate's own op names, e.g. "Convolution (NHWC, QC8) GEMM", when it profiles inside); extra
#     "Subgraph (index: N)" and "Delegate internal:" profiles come after the primary graph's.
#   Real outputs in this layout: https://github.com/tensorflow/tensorflow/issues/53138 (adb shell benchmark_model
#   --enable_op_profiling=true on an SSD detect.tflite: tab-separated summary, "TFLite_Detection_PostProcess"
#   overflowing its 24-character field), https://github.com/tensorflow/tensorflow/issues/42507 (a whole run:
#   timing lines, the initialization profile, then the regular-run profile) and
#   https://github.com/tensorflow/tensorflow/issues/56301 (the same tables under Android logcat prefixes).
#
# tests/data/benchmark_model_op_profiling.txt is NOT a recording: it was written for these tests in that layout.
# Header strings, column names, tab + right-aligned field widths (newer build: width 40, no [start]), table
# order, sorting and the "Timings (microseconds)" lines follow the sources above; the log lines before the
# profile follow tests/data/benchmark_model/cpu_xnnpack.txt (this repository's CPU recording); the node types
# are XNNPACK operator names as newer builds print them. The numbers are invented but consistent: each summary
# row's [avg ms] is the sum of the Run Order [avg ms] of its nodes (one call each per run), and percentages,
# cdf and the profile's Timings follow from them. OLD_FORMAT below is written the same way in the older layout
# ([start] column, width 24, no "INFO: " prefix, one fused TfLiteXNNPackDelegate node).
import json
import os

import pytest

from mobiledets_tf.benchmark.adb import benchmark_on_devices
from mobiledets_tf.benchmark.benchmark_model_output import BenchmarkModelError, parse_benchmark_model_output
from mobiledets_tf.benchmark.op_profile import (ADB_METHOD, OpProfile, OpTypeRow, aggregate, format_op_profile,
                                                parse_op_profile)
from mobiledets_tf.benchmark.targets import parse_target
from test_benchmark_adb import CPU_MODEL, DEVICES, S10, S10_RULES, adb, run_rule  # noqa: F401  (adb: the fixture)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(TESTS_DIR, "data", "benchmark_model_op_profiling.txt")
GEMM, DWCONV, IGEMM = "Convolution (NHWC, QC8) GEMM", "Convolution (NHWC, QC8) DWConv", "Convolution (NHWC, QC8) IGEMM"
# (op, count, total ms) of the sample's regular-run "Summary by node type", in its order
SAMPLE_ROWS = [(GEMM, 50, 14.852), (DWCONV, 31, 3.118), ("TFLite_Detection_PostProcess", 1, 1.853),
               (IGEMM, 1, 0.622), ("Add (ND, QS8)", 9, 0.164), ("Sigmoid (NC, QS8)", 1, 0.141),
               ("Convert (NC, QS8, F32)", 2, 0.133), ("Copy (NC, X8)", 14, 0.125)]
SAMPLE_TOTAL_MS = 21.008

_RUN_HEADER = ("\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t"
               "[times called]\t[Name]\n")
_SUMMARY_HEADER = ("\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t"
                   "[times called]\n")
_POSTPROCESS = "[TFLite_Detection_PostProcess, TFLite_Detection_PostProcess:1, TFLite_Detection_PostProcess:2, " \
               "TFLite_Detection_PostProcess:3]"
OLD_FORMAT = (
    "Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.\n"
    "count=50 first=21498 curr=20977 min=20871 max=21532 avg=21073.9 std=118\n"
    "\n"
    "Inference timings in us: Init: 27311, First inference: 24150, Warmup (avg): 21390.5, Inference (avg): 21073.9\n"
    "Profiling Info for Benchmark Initialization:\n"
    "============================== Run Order ==============================\n"
    + _RUN_HEADER +
    "\t ModifyGraphWithDelegate\t            0.000\t   22.607\t   22.607\t 94.916%\t 94.916%\t  3712.000\t        1\t"
    "ModifyGraphWithDelegate/0\n"
    "\t         AllocateTensors\t           22.607\t    1.211\t    1.211\t  5.084%\t100.000%\t     0.000\t        1\t"
    "AllocateTensors/0\n"
    "\n"
    "Number of nodes executed: 2\n"
    "============================== Summary by node type ==============================\n"
    + _SUMMARY_HEADER +
    "\t ModifyGraphWithDelegate\t        1\t    22.607\t    94.916%\t    94.916%\t  3712.000\t        1\n"
    "\t         AllocateTensors\t        1\t     1.211\t     5.084%\t   100.000%\t     0.000\t        1\n"
    "\n"
    "Timings (microseconds): count=1 curr=23818\n"
    "Memory (bytes): count=0\n"
    "2 nodes observed\n"
    "\n\n\n"
    "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
    "============================== Run Order ==============================\n"
    + _RUN_HEADER +
    "\t   TfLiteXNNPackDelegate\t            0.000\t   19.377\t   18.902\t 90.419%\t 90.419%\t     0.000\t        1\t"
    "[raw_outputs/box_encodings, raw_outputs/class_predictions]:121\n"
    "\t                LOGISTIC\t           18.903\t    0.152\t    0.147\t  0.703%\t 91.122%\t     0.000\t        1\t"
    "[Postprocessor/convert_scores]:118\n"
    "\t              DEQUANTIZE\t           19.051\t    0.001\t    0.000\t  0.000%\t 91.122%\t     0.000\t        1\t"
    "[Postprocessor/scores_dequantized]:119\n"
    "\tTFLite_Detection_PostProcess\t           19.052\t    1.969\t    1.856\t  8.878%\t100.000%\t     0.000\t"
    f"        1\t{_POSTPROCESS}:120\n"
    "\n"
    "Number of nodes executed: 4\n"
    "============================== Summary by node type ==============================\n"
    + _SUMMARY_HEADER +
    "\t   TfLiteXNNPackDelegate\t        1\t    18.902\t    90.419%\t    90.419%\t     0.000\t        1\n"
    "\tTFLite_Detection_PostProcess\t        1\t     1.856\t     8.878%\t    99.297%\t     0.000\t        1\n"
    "\t                LOGISTIC\t        1\t     0.147\t     0.703%\t   100.000%\t     0.000\t        1\n"
    "\t              DEQUANTIZE\t        1\t     0.000\t     0.000%\t   100.000%\t     0.000\t        1\n"
    "\n"
    "Timings (microseconds): count=50 first=21499 curr=20902 min=20788 max=21411 avg=20905.4 std=117\n"
    "Memory (bytes): count=0\n"
    "4 nodes observed\n")


def read_sample() -> str:
    with open(SAMPLE) as f:
        return f.read()


def rows_of(profile: OpProfile):
    return [(row.op, row.count, row.total_ms) for row in profile.rows]


# --- parse_op_profile ---------------------------------------------------------------------------------

def test_sample_holds_both_profiles():
    """The sample is a fair test only if the initialization table comes first."""
    text = read_sample()
    assert text.count("Summary by node type") == 2
    assert text.index("Profiling Info for Benchmark Initialization:") < text.index(
        "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:")


def test_parse_sample_reads_the_regular_runs_table():
    profile = parse_op_profile(read_sample())
    assert rows_of(profile) == [(op, count, pytest.approx(ms, abs=1e-9)) for op, count, ms in SAMPLE_ROWS]
    assert not {"ModifyGraphWithDelegate", "AllocateTensors"} & {row.op for row in profile.rows}  # init table
    assert profile.total_ms() == pytest.approx(SAMPLE_TOTAL_MS, abs=1e-9)
    assert [row.share for row in profile.rows] == pytest.approx([ms / SAMPLE_TOTAL_MS for _, _, ms in SAMPLE_ROWS])
    assert profile.rows[0].share == pytest.approx(0.70697, abs=1e-5)   # the table's own [avg %]: 70.697%
    assert profile.method == ADB_METHOD and profile.model_ms is None


def test_parse_sample_cut_after_the_initialization_profile_raises():
    text = read_sample()
    init_only = text[:text.index("INFO: Operator-wise Profiling Info for Regular Benchmark Runs:")]
    assert "Summary by node type" in init_only
    with pytest.raises(BenchmarkModelError, match="no 'Summary by node type' table for its regular runs"):
        parse_op_profile(init_only)


def test_parse_old_layout_with_a_fused_delegate_node():
    profile = parse_op_profile(OLD_FORMAT)
    assert rows_of(profile) == [("TfLiteXNNPackDelegate", 1, pytest.approx(18.902)),
                                ("TFLite_Detection_PostProcess", 1, pytest.approx(1.856)),
                                ("LOGISTIC", 1, pytest.approx(0.147)), ("DEQUANTIZE", 1, 0.0)]
    assert profile.rows[0].share == pytest.approx(18.902 / 20.905)
    assert profile.rows[-1].share == 0.0


def test_parse_lines_under_logcat_prefixes():
    prefixed = "".join(f"05-30 13:04:39.021 25935 25935 I tflite  : {line}\n" for line in OLD_FORMAT.splitlines())
    assert rows_of(parse_op_profile(prefixed)) == rows_of(parse_op_profile(OLD_FORMAT))


def test_parse_output_without_op_profiling_raises():
    with open(os.path.join(TESTS_DIR, "data", "benchmark_model", "cpu_xnnpack.txt")) as f:
        plain = f.read()
    with pytest.raises(BenchmarkModelError, match="no 'Summary by node type' table"):
        parse_op_profile(plain)
    header_only = "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n" \
                  "============================== Summary by node type ==============================\n" \
                  + _SUMMARY_HEADER + "\n"
    with pytest.raises(BenchmarkModelError, match="has no rows"):
        parse_op_profile(header_only)


def test_timed_run_statistics_of_the_sample_ignore_the_profile_timings():
    latency, _ = parse_benchmark_model_output(read_sample())
    assert (latency.count, latency.mean_ms) == (50, pytest.approx(21.3916))   # not the profile's avg=21008


# --- aggregate, OpProfile, format_op_profile ----------------------------------------------------------------

def test_aggregate_sums_nodes_per_op_type():
    nodes = [("CONV_2D", 1.5), ("DEPTHWISE_CONV_2D", 0.25), ("CONV_2D", 0.5), ("TFLite_Detection_PostProcess", 1.75)]
    profile = aggregate(nodes, "interpreter", model_ms=4.2)
    assert profile.rows == [OpTypeRow("CONV_2D", 2, 2.0, 0.5),
                            OpTypeRow("TFLite_Detection_PostProcess", 1, 1.75, 0.4375),
                            OpTypeRow("DEPTHWISE_CONV_2D", 1, 0.25, 0.0625)]
    assert (profile.method, profile.model_ms, profile.total_ms()) == ("interpreter", 4.2, 4.0)
    assert aggregate([], "m").rows == []
    assert aggregate([("ADD", 0.0)], "m").rows == [OpTypeRow("ADD", 1, 0.0, 0.0)]


def test_profile_dict_round_trip():
    profile = parse_op_profile(read_sample())
    profile.model_ms = 21.3916
    data = json.loads(json.dumps(profile.to_dict()))
    assert data["rows"][0] == {"op": GEMM, "count": 50, "total_ms": 14.852, "share": pytest.approx(14.852 / 21.008)}
    assert OpProfile.from_dict(data) == profile


def test_format_op_profile():
    profile = aggregate([("CONV_2D", 1.5), ("CONV_2D", 0.5), ("TFLite_Detection_PostProcess", 1.0)], "a method.")
    table = ["| op | count | total ms | share |", "|---|---:|---:|---:|", "| CONV_2D | 2 | 2.000 | 66.7% |",
             "| TFLite_Detection_PostProcess | 1 | 1.000 | 33.3% |", "", "Method: a method."]
    assert format_op_profile(profile) == table
    profile.model_ms = 3.25
    assert format_op_profile(profile) == table + [
        "Ops sum to 3.000 ms per inference; the whole model took 3.250 ms in the same run."]


# --- the adb backend with op_profile=True -----------------------------------------------------------------

def local_files(directory):
    """A local benchmark_model binary and model (their content never reaches a device here)."""
    binary, model = str(directory / "benchmark_model"), str(directory / CPU_MODEL)
    for path, content in [(binary, b"\x7fELF"), (model, b"TFL3")]:
        with open(path, "wb") as f:
            f.write(content)
    return binary, model


def test_adb_op_profile_end_to_end(adb, tmp_path):
    binary, model = local_files(tmp_path)
    adb.answer(DEVICES, run_rule(S10, "--use_xnnpack=true", SAMPLE),      # absolute path: the stand-in reads it
               run_rule(S10, "--use_xnnpack=false", "cpu_xnnpack.txt"),   # a recording without profiling
               *S10_RULES)
    profiled, plain = benchmark_on_devices([model], [parse_target("cpu"), parse_target("cpu:xnnpack=false")], binary,
                                           serials=[S10], adb=adb.path, progress=False, op_profile=True)
    commands = [call[-1] for call in adb.calls() if call[:3] == ["-s", S10, "shell"] and "taskset" in call[-1]]
    assert commands == [
        "taskset 80 /data/local/tmp/mobiledets/benchmark_model "
        f"--graph=/data/local/tmp/mobiledets/{CPU_MODEL} --num_threads=1 --warmup_runs=5 --num_runs=50 "
        f"--use_xnnpack={xnnpack} --enable_op_profiling=true" for xnnpack in ("true", "false")]

    assert profiled.ok, profiled.error
    assert (profiled.latency.count, profiled.latency.mean_ms) == (50, pytest.approx(21.3916))
    profile = OpProfile.from_dict(profiled.details["op_profile"])
    assert rows_of(profile) == [(op, count, pytest.approx(ms, abs=1e-9)) for op, count, ms in SAMPLE_ROWS]
    assert profile.model_ms == pytest.approx(21.3916) and profile.method == ADB_METHOD
    assert "op_profile_error" not in profiled.details
    json.dumps(profiled.details)   # the row stays serializable

    assert plain.ok and plain.latency.mean_ms == pytest.approx(23.4501)   # keeps its latency
    assert "op_profile" not in plain.details
    assert plain.details["op_profile_error"].startswith("benchmark_model printed no 'Summary by node type' table")
    assert "\n" not in plain.details["op_profile_error"]


def test_adb_without_op_profile_leaves_the_command_and_details_alone(adb, tmp_path):
    binary, model = local_files(tmp_path)
    adb.answer(DEVICES, run_rule(S10, "--use_xnnpack=true", SAMPLE), *S10_RULES)
    (row,) = benchmark_on_devices([model], [parse_target("cpu")], binary, serials=[S10], adb=adb.path, progress=False)
    assert row.ok and "--enable_op_profiling" not in row.details["command"]
    assert "op_profile" not in row.details and "op_profile_error" not in row.details
