"""The adb backend against a stand-in `adb` (tests/adb_standin.py) that replays benchmark_model and adb
outputs recorded in their real format (tests/data/benchmark_model/), and the output parser on each
recording. Expected commands follow the documented protocol; expected numbers are read off the
recordings by hand (microseconds / 1000)."""
import json
import os
import shlex
import stat
import sys

import pytest

from mobiledets_tf.benchmark.adb import (AdbError, AdbNotFoundError, benchmark_on_devices, list_devices,
                                         parse_max_frequencies, single_big_core_mask)
from mobiledets_tf.benchmark.benchmark_model_output import BenchmarkModelError, parse_benchmark_model_output
from mobiledets_tf.benchmark.targets import parse_target

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(TESTS_DIR, "data", "benchmark_model")
REMOTE = "/data/local/tmp/mobiledets"
REMOTE_BINARY = "/data/local/tmp/mobiledets/benchmark_model"
FREQ_FILES = "/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq"
S10, S23 = "R58M123ABCD", "RFCW2198XYZ"   # Galaxy S10 (SM8150, Android 11: no ro.soc.model), Galaxy S23
S10_LABEL, S23_LABEL = "SM-G973U (msmnile) R58M123ABCD", "SM-S911B (SM8550) RFCW2198XYZ"
CPU_MODEL, DSP_MODEL = "ssdlite_mobiledet_cpu_int8.tflite", "ssdlite_mobiledet_dsp_int8.tflite"
GPU_MODEL, V2_MODEL = "ssdlite_mobiledet_gpu_float32.tflite", "ssdlite_mobilenet_v2_int8.tflite"
DEVICES = {"argv": ["devices"], "output_file": "adb_devices.txt"}


def recorded(name: str) -> str:
    with open(os.path.join(DATA_DIR, name)) as f:
        return f.read()


class FakeAdb:
    """An `adb` executable (a wrapper around tests/adb_standin.py) answering by the given rules."""

    def __init__(self, directory):
        self.path = str(directory / "bin" / "adb")
        self.log = directory / "adb_calls.jsonl"
        self.scenario = directory / "adb_scenario.json"
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "w") as f:
            f.write(f'#!/bin/sh\nexec "{sys.executable}" "{os.path.join(TESTS_DIR, "adb_standin.py")}" "$@"\n')
        os.chmod(self.path, os.stat(self.path).st_mode | stat.S_IXUSR)

    def answer(self, *rules: dict) -> None:
        self.scenario.write_text(json.dumps({"rules": list(rules)}))

    def calls(self):
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


@pytest.fixture
def adb(tmp_path, monkeypatch):
    fake = FakeAdb(tmp_path)
    monkeypatch.setenv("ADB_STANDIN_LOG", str(fake.log))
    monkeypatch.setenv("ADB_STANDIN_SCENARIO", str(fake.scenario))
    return fake


@pytest.fixture
def files(tmp_path):
    """Local benchmark_model binary and model files (their content never reaches a device here)."""
    paths = {}
    for name in ["benchmark_model", CPU_MODEL, DSP_MODEL, GPU_MODEL, V2_MODEL]:
        paths[name] = str(tmp_path / name)
        with open(paths[name], "wb") as f:
            f.write(b"TFL3" if name.endswith(".tflite") else b"\x7fELF")
    return paths


def device_rules(serial: str, model: str, soc: str, board: str, frequencies: str) -> list:
    device = ["-s", serial]
    return [
        {"argv": device + ["shell", "getprop", "ro.product.model"], "output": model + "\n"},
        {"argv": device + ["shell", "getprop", "ro.soc.model"], "output": soc + "\n"},
        {"argv": device + ["shell", "getprop", "ro.board.platform"], "output": board + "\n"},
        {"argv": device + ["shell", "grep", "-H", ".", FREQ_FILES], "output_file": frequencies},
        {"argv_prefix": device + ["shell", "mkdir"]},
        {"argv_prefix": device + ["shell", "chmod"]},
        {"argv_prefix": device + ["push"],
         "output": "1 file pushed, 0 skipped. 38.1 MB/s (5718624 bytes in 0.143s)\n"},
    ]


S10_RULES = device_rules(S10, "SM-G973U", "", "msmnile", "cpu_max_freq_sm8150.txt")
S23_RULES = device_rules(S23, "SM-S911B", "SM8550", "sm8550", "cpu_max_freq_sm8550.txt")


def run_rule(serial: str, flag: str, output_file: str, returncode: int = 0) -> dict:
    return {"argv_prefix": ["-s", serial, "shell"], "contains": [flag], "output_file": output_file,
            "returncode": returncode}


def setup_calls(serial: str, binary: str, board_fallback: bool, read_frequencies: bool = True) -> list:
    device = ["-s", serial]
    calls = [device + ["shell", "getprop", "ro.product.model"], device + ["shell", "getprop", "ro.soc.model"]]
    calls += [device + ["shell", "getprop", "ro.board.platform"]] if board_fallback else []
    calls += [device + ["shell", "grep", "-H", ".", FREQ_FILES]] if read_frequencies else []
    return calls + [device + ["shell", "mkdir", "-p", REMOTE], device + ["push", binary, REMOTE_BINARY],
                    device + ["shell", "chmod", "+x", REMOTE_BINARY]]


def push_call(serial: str, local: str) -> list:
    return ["-s", serial, "push", local, f"{REMOTE}/{os.path.basename(local)}"]


def assert_latency(latency, count, mean_ms, std_ms, min_ms, max_ms):
    assert latency.count == count
    assert (latency.mean_ms, latency.std_ms, latency.min_ms, latency.max_ms) == pytest.approx(
        (mean_ms, std_ms, min_ms, max_ms), abs=1e-9)
    assert latency.median_ms is None and latency.p90_ms is None


# --- the output parser on each recording -----------------------------------------------------------

def test_parse_cpu_xnnpack():
    latency, details = parse_benchmark_model_output(recorded("cpu_xnnpack.txt"))
    assert_latency(latency, 50, 23.4501, 0.142, 23.301, 24.017)
    assert (details["init_us"], details["first_inference_us"], details["warmup_avg_us"]) == (27104, 29861, 23871.3)
    assert details["warmup_count"] == 22
    assert details["delegations"] == [
        {"delegate": "TfLiteXNNPackDelegate", "nodes": 118, "total_nodes": 121, "partitions": 2}]
    assert details["delegates_applied"] == {"XNNPACK": "partially"}
    assert "nnapi_accelerators" not in details and "timed_run_percentiles_us" not in details


def test_parse_nnapi_single_warmup_run_and_float_average():
    latency, details = parse_benchmark_model_output(recorded("nnapi_qti_dsp.txt"))
    assert_latency(latency, 112, 8.97358, 0.152, 8.802, 9.655)
    # warm-up `count=1 curr=1215340`; summary `Warmup (avg): 1.21534e+06`
    assert (details["init_us"], details["first_inference_us"], details["warmup_avg_us"]) == (412337, 1215340, 1215340)
    assert details["warmup_count"] == 1
    assert details["nnapi_accelerators"] == ["qti-default", "qti-dsp", "qti-gpu", "qti-hta", "nnapi-reference"]
    assert details["delegations"] == [
        {"delegate": "TfLiteNnapiDelegate", "nodes": 120, "total_nodes": 121, "partitions": 2}]
    assert details["delegates_applied"] == {"NNAPI": "partially"}


def test_parse_gpu_with_percentiles_and_unsupported_op_error_line():
    latency, details = parse_benchmark_model_output(recorded("gpu.txt"))
    assert_latency(latency, 84, 11.8934, 0.167, 11.602, 12.551)
    assert details["timed_run_percentiles_us"] == {"p5": 11664, "median": 11879, "p95": 12210}
    assert (details["init_us"], details["first_inference_us"], details["warmup_avg_us"]) == (1262741, 31734, 12426.8)
    assert details["delegations"] == [
        {"delegate": "TfLiteGpuDelegateV2", "nodes": 119, "total_nodes": 120, "partitions": 2}]
    assert details["delegates_applied"] == {"GPU": "partially"}


def test_parse_hexagon_reports_both_delegation_lines():
    latency, details = parse_benchmark_model_output(recorded("hexagon.txt"))
    assert_latency(latency, 98, 10.2152, 0.118, 10.071, 10.733)
    assert (details["init_us"], details["first_inference_us"], details["warmup_avg_us"]) == (302118, 35120, 10769.4)
    assert details["delegations"] == [
        {"delegate": "TfLiteHexagonDelegate", "nodes": 118, "total_nodes": 121, "partitions": 1},
        {"delegate": "TfLiteHexagonDelegate", "nodes": 118, "total_nodes": 121, "partitions": 2}]
    assert details["delegates_applied"] == {"Hexagon": "partially"}


def test_parse_external_qnn_delegate():
    latency, details = parse_benchmark_model_output(recorded("external_qnn_htp.txt"))
    assert_latency(latency, 617, 1.61987, 0.041, 1.580, 2.233)
    assert (details["init_us"], details["first_inference_us"], details["warmup_avg_us"]) == (688514, 4410, 1688.22)
    assert details["delegations"][0] == {"delegate": "TfLiteQnnDelegate", "nodes": 118, "total_nodes": 121,
                                         "partitions": 1}
    assert details["delegates_applied"] == {"EXTERNAL": "partially"}


def test_parse_external_delegate_that_did_not_load():
    latency, details = parse_benchmark_model_output(recorded("external_delegate_not_loaded.txt"))
    assert_latency(latency, 50, 21.7173, 0.161, 21.498, 22.391)   # the CPU's time: XNNPACK took the graph
    assert details["delegates_applied"] == {"EXTERNAL": "not created"}
    assert [d["delegate"] for d in details["delegations"]] == ["TfLiteXNNPackDelegate"]


def test_parse_crash_ignores_the_warmup_statistics():
    with pytest.raises(BenchmarkModelError, match="no timed-run statistics") as error:
        parse_benchmark_model_output(recorded("crash_segfault.txt"))
    assert str(error.value).endswith("Segmentation fault")


def test_parse_model_not_found():
    with pytest.raises(BenchmarkModelError) as error:
        parse_benchmark_model_output(recorded("model_not_found.txt"))
    assert "ERROR: Could not open '/data/local/tmp/mobiledets/ssdlite_mobiledet_cpu_int8.tflite'." in str(error.value)
    assert str(error.value).endswith("ERROR: Benchmarking failed.")


def test_parse_all_same_statistics_line():
    text = ("INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if "
            "exceeding 150 seconds.\nINFO: count=1 curr=4120\n\n"
            "INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if "
            "exceeding 150 seconds.\nINFO: count=50 curr=2000(all same)\n\n")
    latency, details = parse_benchmark_model_output(text)
    assert_latency(latency, 50, 2.0, 0.0, 2.0, 2.0)
    assert details["first_inference_us"] == 4120 and details["init_us"] is None


# --- devices, cores ----------------------------------------------------------------------------------

def test_list_devices_reads_every_state(adb):
    adb.answer(DEVICES)
    assert list_devices(adb.path) == {
        S10: "device", S23: "device", "emulator-5554": "offline", "0A1B2C3D4E": "unauthorized",
        "9B071FFAZ00BKR": "no permissions (missing udev rules? user is in the plugdev group); "
                          "see [http://developer.android.com/tools/device.html]"}
    assert adb.calls() == [["devices"]]


def test_single_big_core_mask_orders_cpus_by_number():
    def listing(frequencies):
        return "".join(f"{FREQ_FILES.replace('cpu*', f'cpu{cpu}')}:{khz}\n" for cpu, khz in frequencies)
    glob_order = [0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9]   # how the device shell sorts cpu0..cpu11
    twelve_cores = parse_max_frequencies(listing([(cpu, 3000000 if cpu >= 10 else 2000000) for cpu in glob_order]))
    assert single_big_core_mask(twelve_cores) == "800"                                  # cpu11, not cpu9
    assert single_big_core_mask(parse_max_frequencies(listing([(0, 1800000), (10, 1800000), (2, 2400000)]))) == "4"
    assert single_big_core_mask(parse_max_frequencies(recorded("cpu_max_freq_sm8150.txt"))) == "80"
    assert single_big_core_mask(parse_max_frequencies(recorded("cpu_max_freq_sm8550.txt"))) == "80"


# --- benchmark_on_devices ----------------------------------------------------------------------------

def test_nnapi_run_with_accelerator_name(adb, files):
    adb.answer(DEVICES, run_rule(S10, "--use_nnapi=true", "nnapi_qti_dsp.txt"), *S10_RULES)
    rows = benchmark_on_devices([files[DSP_MODEL]], [parse_target("nnapi:accelerator=qti-dsp")],
                                files["benchmark_model"], serials=[S10], warmup_runs=1, adb=adb.path,
                                progress=False)
    command = ("taskset 80 /data/local/tmp/mobiledets/benchmark_model "
               "--graph=/data/local/tmp/mobiledets/ssdlite_mobiledet_dsp_int8.tflite --num_threads=1 "
               "--warmup_runs=1 --num_runs=50 --use_nnapi=true --nnapi_accelerator_name=qti-dsp")
    assert adb.calls() == ([["devices"]] + setup_calls(S10, files["benchmark_model"], board_fallback=True)
                           + [push_call(S10, files[DSP_MODEL]), ["-s", S10, "shell", command]])
    (row,) = rows
    assert row.ok, row.error
    assert (row.model_path, row.backend, row.target, row.device, row.threads) == (
        files[DSP_MODEL], "adb", "nnapi(accelerator=qti-dsp)", S10_LABEL, 1)
    assert_latency(row.latency, 112, 8.97358, 0.152, 8.802, 9.655)
    assert row.details["command"] == command and row.details["cpu_mask"] == "80"
    assert (row.details["init_us"], row.details["first_inference_us"]) == (412337, 1215340)
    assert row.details["nnapi_accelerators"] == ["qti-default", "qti-dsp", "qti-gpu", "qti-hta", "nnapi-reference"]
    assert row.details["delegates_applied"] == {"NNAPI": "partially"}


def test_gpu_run_on_a_user_given_core_mask(adb, files):
    adb.answer(DEVICES, run_rule(S23, "--use_gpu=true", "gpu.txt"), *S23_RULES)
    (row,) = benchmark_on_devices([files[GPU_MODEL]], [parse_target("gpu")], files["benchmark_model"],
                                  serials=[S23], cpu_mask="0x40", adb=adb.path, progress=False)
    command = ("taskset 40 /data/local/tmp/mobiledets/benchmark_model "
               "--graph=/data/local/tmp/mobiledets/ssdlite_mobiledet_gpu_float32.tflite --num_threads=1 "
               "--warmup_runs=5 --num_runs=50 --use_gpu=true")
    assert adb.calls() == ([["devices"]] + setup_calls(S23, files["benchmark_model"], board_fallback=False,
                                                       read_frequencies=False)
                           + [push_call(S23, files[GPU_MODEL]), ["-s", S23, "shell", command]])
    assert row.ok and (row.target, row.device) == ("gpu", S23_LABEL)
    assert_latency(row.latency, 84, 11.8934, 0.167, 11.602, 12.551)
    assert row.details["timed_run_percentiles_us"] == {"p5": 11664, "median": 11879, "p95": 12210}
    assert row.details["delegations"] == [
        {"delegate": "TfLiteGpuDelegateV2", "nodes": 119, "total_nodes": 120, "partitions": 2}]


def test_hexagon_run(adb, files):
    adb.answer(DEVICES, run_rule(S10, "--use_hexagon=true", "hexagon.txt"), *S10_RULES)
    (row,) = benchmark_on_devices([files[DSP_MODEL]], [parse_target("hexagon:lib=/data/local/tmp/hexagon")],
                                  files["benchmark_model"], serials=[S10], adb=adb.path, progress=False)
    command = ("LD_LIBRARY_PATH=/data/local/tmp/hexagon taskset 80 /data/local/tmp/mobiledets/benchmark_model "
               "--graph=/data/local/tmp/mobiledets/ssdlite_mobiledet_dsp_int8.tflite --num_threads=1 "
               "--warmup_runs=5 --num_runs=50 --use_hexagon=true --hexagon_lib_path=/data/local/tmp/hexagon")
    assert adb.calls() == ([["devices"]] + setup_calls(S10, files["benchmark_model"], board_fallback=True)
                           + [push_call(S10, files[DSP_MODEL]), ["-s", S10, "shell", command]])
    assert row.ok and row.target == "hexagon(lib=/data/local/tmp/hexagon)"
    assert_latency(row.latency, 98, 10.2152, 0.118, 10.071, 10.733)
    assert row.details["delegates_applied"] == {"Hexagon": "partially"}
    assert row.details["init_us"] == 302118


def test_external_delegate_with_options(adb, files):
    adb.answer(DEVICES, run_rule(S23, "--external_delegate_path=", "external_qnn_htp.txt"), *S23_RULES)
    target = parse_target("external:path=/data/local/tmp/qnn/libQnnTFLiteDelegate.so,"
                          "options=backend_type:htp;htp_performance_mode:2")
    (row,) = benchmark_on_devices([files[DSP_MODEL]], [target], files["benchmark_model"], serials=[S23],
                                  adb=adb.path, progress=False)
    command = ("LD_LIBRARY_PATH=/data/local/tmp/qnn "
               "ADSP_LIBRARY_PATH='/data/local/tmp/qnn;/system/lib/rfsa/adsp;/system/vendor/lib/rfsa/adsp;/dsp' "
               "taskset 80 /data/local/tmp/mobiledets/benchmark_model "
               "--graph=/data/local/tmp/mobiledets/ssdlite_mobiledet_dsp_int8.tflite --num_threads=1 "
               "--warmup_runs=5 --num_runs=50 --external_delegate_path=/data/local/tmp/qnn/libQnnTFLiteDelegate.so "
               "--external_delegate_options='backend_type:htp;htp_performance_mode:2'")
    assert adb.calls() == ([["devices"]] + setup_calls(S23, files["benchmark_model"], board_fallback=False)
                           + [push_call(S23, files[DSP_MODEL]), ["-s", S23, "shell", command]])
    # what the device shell hands benchmark_model: the ';' stays inside one argument
    assert shlex.split(command)[-1] == "--external_delegate_options=backend_type:htp;htp_performance_mode:2"
    assert row.ok and row.target == "external(libQnnTFLiteDelegate.so,backend_type:htp;htp_performance_mode:2)"
    assert_latency(row.latency, 617, 1.61987, 0.041, 1.580, 2.233)
    assert row.details["delegates_applied"] == {"EXTERNAL": "partially"}


def test_external_delegate_that_did_not_load_is_an_error(adb, files):
    adb.answer(DEVICES, run_rule(S23, "--external_delegate_path=", "external_delegate_not_loaded.txt"), *S23_RULES)
    target = parse_target("external:path=/data/local/tmp/qnn/libQnnTFLiteDelegate.so,options=backend_type:htp")
    (row,) = benchmark_on_devices([files[DSP_MODEL]], [target], files["benchmark_model"], serials=[S23],
                                  adb=adb.path, progress=False)
    assert not row.ok and row.latency is None
    assert row.error == (
        "ssdlite_mobiledet_dsp_int8.tflite [external(libQnnTFLiteDelegate.so,backend_type:htp)] on "
        "SM-S911B (SM8550) RFCW2198XYZ: the EXTERNAL delegate could not be created, so the 21.72 ms measured "
        "are the CPU's: INFO: Unable to load external delegate from : /data/local/tmp/qnn/libQnnTFLiteDelegate.so")


def test_device_not_connected_gets_error_rows_and_the_others_run(adb, files):
    adb.answer(DEVICES, run_rule(S10, "--use_xnnpack=true", "cpu_xnnpack.txt"), *S10_RULES)
    rows = benchmark_on_devices([files[CPU_MODEL]], [parse_target("cpu")], files["benchmark_model"],
                                serials=["emulator-5554", S10, "ZY22ABSENT", "0A1B2C3D4E"], adb=adb.path,
                                progress=True)
    command = ("taskset 80 /data/local/tmp/mobiledets/benchmark_model "
               "--graph=/data/local/tmp/mobiledets/ssdlite_mobiledet_cpu_int8.tflite --num_threads=1 "
               "--warmup_runs=5 --num_runs=50 --use_xnnpack=true")
    assert adb.calls() == ([["devices"]] + setup_calls(S10, files["benchmark_model"], board_fallback=True)
                           + [push_call(S10, files[CPU_MODEL]), ["-s", S10, "shell", command]])
    assert [row.device for row in rows] == ["emulator-5554", S10_LABEL, "ZY22ABSENT", "0A1B2C3D4E"]
    assert [row.error for row in rows] == [
        "ssdlite_mobiledet_cpu_int8.tflite [cpu] on emulator-5554: device emulator-5554 is not connected "
        "(adb devices: offline)",
        "",
        "ssdlite_mobiledet_cpu_int8.tflite [cpu] on ZY22ABSENT: device ZY22ABSENT is not connected "
        "(adb devices: not listed)",
        "ssdlite_mobiledet_cpu_int8.tflite [cpu] on 0A1B2C3D4E: device 0A1B2C3D4E is not connected "
        "(adb devices: unauthorized)"]
    assert_latency(rows[1].latency, 50, 23.4501, 0.142, 23.301, 24.017)


def test_benchmark_model_crash_is_an_error_row_and_later_rows_run(adb, files):
    adb.answer(DEVICES, run_rule(S10, V2_MODEL, "crash_segfault.txt", returncode=139),
               run_rule(S10, CPU_MODEL, "cpu_xnnpack.txt"), *S10_RULES)
    rows = benchmark_on_devices([files[V2_MODEL], files[CPU_MODEL]], [parse_target("cpu")],
                                files["benchmark_model"], serials=[S10], adb=adb.path, progress=False)
    def command(model):
        return ("taskset 80 /data/local/tmp/mobiledets/benchmark_model "
                f"--graph=/data/local/tmp/mobiledets/{model} --num_threads=1 --warmup_runs=5 --num_runs=50 "
                "--use_xnnpack=true")
    assert adb.calls() == ([["devices"]] + setup_calls(S10, files["benchmark_model"], board_fallback=True)
                           + [push_call(S10, files[V2_MODEL]), ["-s", S10, "shell", command(V2_MODEL)],
                              push_call(S10, files[CPU_MODEL]), ["-s", S10, "shell", command(CPU_MODEL)]])
    crashed, measured = rows
    assert crashed.latency is None
    assert crashed.error.startswith(
        f"{V2_MODEL} [cpu] on {S10_LABEL}: benchmark_model exited with code 139 (SIGSEGV): ")
    assert crashed.error.endswith("Segmentation fault")
    assert crashed.details["command"] == command(V2_MODEL)
    assert measured.ok
    assert_latency(measured.latency, 50, 23.4501, 0.142, 23.301, 24.017)


def test_push_failure_is_an_error_row_for_that_model(adb, files):
    failure = (f"adb: error: failed to copy '{files[V2_MODEL]}' to '{REMOTE}/{V2_MODEL}': "
               "remote write failed: No space left on device\n")
    adb.answer(DEVICES, {"argv": push_call(S10, files[V2_MODEL]), "output": failure, "returncode": 1,
                         "stream": "stderr"},
               run_rule(S10, CPU_MODEL, "cpu_xnnpack.txt"), *S10_RULES)
    failed, measured = benchmark_on_devices([files[V2_MODEL], files[CPU_MODEL]], [parse_target("cpu")],
                                            files["benchmark_model"], serials=[S10], adb=adb.path, progress=False)
    command = ("taskset 80 /data/local/tmp/mobiledets/benchmark_model "
               "--graph=/data/local/tmp/mobiledets/ssdlite_mobiledet_cpu_int8.tflite --num_threads=1 "
               "--warmup_runs=5 --num_runs=50 --use_xnnpack=true")
    assert adb.calls() == ([["devices"]] + setup_calls(S10, files["benchmark_model"], board_fallback=True)
                           + [push_call(S10, files[V2_MODEL]),   # fails: no run of this model follows
                              push_call(S10, files[CPU_MODEL]), ["-s", S10, "shell", command]])
    assert failed.error == (f"{V2_MODEL} [cpu] on {S10_LABEL}: pushing the model failed: "
                            f"`adb -s {S10} push {files[V2_MODEL]} {REMOTE}/{V2_MODEL}` exited with code 1: "
                            + failure.strip())
    assert measured.ok and measured.latency.count == 50


def test_every_ready_device_by_default_with_a_progress_callable(adb, files):
    adb.answer(DEVICES, run_rule(S10, "--use_xnnpack=false", "cpu_xnnpack.txt"),
               run_rule(S23, "--use_xnnpack=false", "cpu_xnnpack.txt"), *S10_RULES, *S23_RULES)
    seen = []
    rows = benchmark_on_devices([files[CPU_MODEL]], [parse_target("cpu:xnnpack=false")], files["benchmark_model"],
                                adb=adb.path, progress=seen.append)
    command = ("taskset 80 /data/local/tmp/mobiledets/benchmark_model "
               "--graph=/data/local/tmp/mobiledets/ssdlite_mobiledet_cpu_int8.tflite --num_threads=1 "
               "--warmup_runs=5 --num_runs=50 --use_xnnpack=false")
    binary = files["benchmark_model"]
    assert adb.calls() == ([["devices"]]
                           + setup_calls(S10, binary, True)
                           + [push_call(S10, files[CPU_MODEL]), ["-s", S10, "shell", command]]
                           + setup_calls(S23, binary, False)
                           + [push_call(S23, files[CPU_MODEL]), ["-s", S23, "shell", command]])
    assert seen == rows and [row.device for row in rows] == [S10_LABEL, S23_LABEL]
    assert all(row.ok and row.target == "cpu(xnnpack=false)" for row in rows)


def test_no_ready_device(adb, files):
    adb.answer({"argv": ["devices"], "output": "List of devices attached\nemulator-5554\toffline\n\n"})
    with pytest.raises(AdbError, match=r"no Android device is ready \(adb devices: emulator-5554 offline\)"):
        benchmark_on_devices([files[CPU_MODEL]], [parse_target("cpu")], files["benchmark_model"], adb=adb.path,
                             progress=False)


def test_bad_arguments_stop_before_adb_runs(adb, files):
    adb.answer(DEVICES)
    with pytest.raises(ValueError, match="cpu_mask 'zz'"):
        benchmark_on_devices([files[CPU_MODEL]], [parse_target("cpu")], files["benchmark_model"], cpu_mask="zz",
                             adb=adb.path, progress=False)
    with pytest.raises(ValueError, match="the adb backend runs"):
        benchmark_on_devices([files[CPU_MODEL]], [parse_target("edgetpu")], files["benchmark_model"],
                             adb=adb.path, progress=False)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        benchmark_on_devices(["missing.tflite"], [parse_target("cpu")], files["benchmark_model"], adb=adb.path,
                             progress=False)
    assert adb.calls() == []


def test_adb_not_installed(tmp_path, monkeypatch, files):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(AdbNotFoundError, match="platform-tools") as error:
        list_devices()
    assert "apt-get install adb" in str(error.value)
    with pytest.raises(AdbNotFoundError, match="cannot run adb"):
        benchmark_on_devices([files[CPU_MODEL]], [parse_target("cpu")], files["benchmark_model"], progress=False)
    with pytest.raises(AdbNotFoundError):
        list_devices(adb=str(tmp_path / "platform-tools" / "adb"))
