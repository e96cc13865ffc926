"""Time .tflite models on Android phones over adb with TFLite's `benchmark_model` binary.

For each device (default: every device `adb devices` lists as "device") the backend reads the device
label, finds its big core, creates the remote directory, pushes benchmark_model (once, then
`chmod +x`) and each model (once), and runs every model on every target, pinned with taskset:

    adb -s SERIAL shell taskset MASK REMOTE/benchmark_model --graph=REMOTE/MODEL --num_threads=T
        --warmup_runs=W --num_runs=N <target flags>

Target flags: cpu `--use_xnnpack=true|false`; gpu `--use_gpu=true`; nnapi `--use_nnapi=true`
[`--nnapi_accelerator_name=NAME`]; hexagon `--use_hexagon=true --hexagon_lib_path=DIR`; external
`--external_delegate_path=PATH` [`--external_delegate_options='k:v;k:v'`]. Hexagon and external
runs also get `LD_LIBRARY_PATH=<library directory>` (benchmark_model dlopens libhexagon_interface.so,
and the QNN delegate libQnnHtp.so, by name), and external runs `ADSP_LIBRARY_PATH='<dir>;<system
DSP dirs>'` (where the DSP finds the delegate's skel libraries; the list TFLite's Hexagon delegate
sets for itself). Every word is quoted for the device shell.

The paper's protocol is one thread on one large core: by default the mask selects ONE core with the
highest cpuinfo_max_freq (the highest-numbered of them); `cpu_mask="80"` overrides it.

Device label (Measurement.device): "<ro.product.model> (<ro.soc.model>) <serial>", with
ro.board.platform standing in for ro.soc.model before Android 12: "Pixel 7 (GS201) 2A181FDH300ABC",
"SM-G973U (msmnile) R58M123ABCD".

With op_profile=True benchmark_model also gets `--enable_op_profiling=true`, and each successful row
gets details["op_profile"] (OpProfile.to_dict(): the per-node-type table of the timed runs, see
op_profile.py, with model_ms = the row's mean latency) or, when the output has no such table,
details["op_profile_error"]; the row keeps its latency either way. Profiling slows each run a little,
so the latencies of a profiled run are not those of a plain one.

Each failure (device not connected, push failed, benchmark_model crashed or exited non-zero, no
timing, the requested delegate not applied) becomes that row's error, naming model, target and
device, and the loop goes on. `adb` missing is the one error that stops everything (AdbNotFoundError).
"""
import dataclasses
import os
import posixpath
import re
import shlex
import signal
import subprocess
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from mobiledets_tf import fileio
from mobiledets_tf.benchmark.benchmark_model_output import (BenchmarkModelError, failure_lines,
                                                            parse_benchmark_model_output)
from mobiledets_tf.benchmark.latency import Measurement
from mobiledets_tf.benchmark.op_profile import parse_op_profile
from mobiledets_tf.benchmark.targets import BACKEND_TARGETS, Target, parse_delegate_options
from mobiledets_tf.progress import progress_bar

DEFAULT_REMOTE_DIR = "/data/local/tmp/mobiledets"
DEFAULT_HEXAGON_LIB_DIR = "/data/local/tmp"
DEFAULT_WARMUP_RUNS = 5
DEFAULT_NUM_RUNS = 50
COMMAND_TIMEOUT_S = 60.0
PUSH_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 900.0          # benchmark_model stops each of its two phases after 150 s by default
TIMED_OUT = 124                # returncode run_adb reports for a command killed at its timeout
MAX_FREQ_FILES = "/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq"
SYSTEM_DSP_DIRS = "/system/lib/rfsa/adsp;/system/vendor/lib/rfsa/adsp;/dsp"
DELEGATE_PROVIDERS = {"gpu": "GPU", "nnapi": "NNAPI", "hexagon": "Hexagon", "external": "EXTERNAL"}
ADB_INSTALL_HINT = ("Install the Android SDK platform-tools "
                    "(https://developer.android.com/tools/releases/platform-tools) or the Debian/Ubuntu "
                    "package `adb` (sudo apt-get install adb), or pass the path of adb.")

Progress = Union[bool, Callable[[Measurement], None]]


class AdbError(RuntimeError):
    """An adb command failed, or no device can be used."""


class AdbNotFoundError(AdbError):
    """The adb executable cannot be run."""


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    serial: str
    model: str   # ro.product.model
    soc: str     # ro.soc.model (Android 12+), else ro.board.platform

    @property
    def label(self) -> str:
        return f"{self.model or 'unknown model'} ({self.soc or 'unknown SoC'}) {self.serial}"


def run_adb(serial: Optional[str], args: Sequence[str], adb: str = "adb",
            timeout: float = COMMAND_TIMEOUT_S) -> Tuple[int, str]:
    """Runs `adb [-s SERIAL] ARGS...` -> (returncode, stdout and stderr combined); TIMED_OUT on timeout."""
    command = [adb] + (["-s", serial] if serial else []) + list(args)
    try:
        run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except OSError as error:
        raise AdbNotFoundError(f"cannot run adb ({adb!r}: {error.strerror}). {ADB_INSTALL_HINT}") from error
    except subprocess.TimeoutExpired as error:
        return TIMED_OUT, _text(error.output) + f"\n{shlex.join(command)}: timed out after {timeout:g} s"
    return run.returncode, _text(run.stdout)


def list_devices(adb: str = "adb") -> Dict[str, str]:
    """`adb devices` -> {serial: state}; state is device, offline, unauthorized, no permissions (...), ..."""
    code, output = run_adb(None, ["devices"], adb)
    if code != 0:
        raise AdbError(f"`{adb} devices` failed (exit code {code}): {' | '.join(failure_lines(output))}")
    return dict(re.findall(r"^(\S+)\t+(.+?)\s*$", output, flags=re.MULTILINE))


def device_info(serial: str, adb: str = "adb") -> DeviceInfo:
    model = _adb_checked(serial, ["shell", "getprop", "ro.product.model"], adb).strip()
    soc = (_adb_checked(serial, ["shell", "getprop", "ro.soc.model"], adb).strip()
           or _adb_checked(serial, ["shell", "getprop", "ro.board.platform"], adb).strip())
    return DeviceInfo(serial, model, soc)


def parse_max_frequencies(listing: str) -> Dict[int, int]:
    """`grep -H . /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq` output -> {cpu number: kHz}."""
    pattern = r"/cpu(\d+)/cpufreq/cpuinfo_max_freq:\s*(\d+)"
    return {int(cpu): int(khz) for cpu, khz in re.findall(pattern, listing)}


def single_big_core_mask(max_frequencies: Dict[int, int]) -> str:
    """Hex taskset mask of ONE core with the highest max frequency (the highest-numbered such core)."""
    top = max(max_frequencies.values())
    return format(1 << max(cpu for cpu, khz in max_frequencies.items() if khz == top), "x")


def big_core_mask(serial: str, adb: str = "adb") -> str:
    """The device's single-big-core taskset mask, from one `grep -H` over every cpuinfo_max_freq."""
    code, listing = run_adb(serial, ["shell", "grep", "-H", ".", MAX_FREQ_FILES], adb)
    frequencies = parse_max_frequencies(listing)
    if not frequencies:
        raise AdbError(f"cannot read the CPU max frequencies ({MAX_FREQ_FILES}, exit code {code}: "
                       f"{' | '.join(failure_lines(listing))}); pass cpu_mask= to choose the core")
    return single_big_core_mask(frequencies)


def target_flags(target: Target) -> List[Tuple[str, str]]:
    """benchmark_model flags (name, value) selecting the target's delegate."""
    if target.kind == "cpu":
        return [("use_xnnpack", str(target.flag("xnnpack", True)).lower())]
    if target.kind == "gpu":
        return [("use_gpu", "true")]
    if target.kind == "nnapi":
        name = target.option("accelerator")
        return [("use_nnapi", "true")] + ([("nnapi_accelerator_name", name)] if name else [])
    if target.kind == "hexagon":
        return [("use_hexagon", "true"), ("hexagon_lib_path", target.option("lib", DEFAULT_HEXAGON_LIB_DIR))]
    if target.kind == "external":
        options = target.option("options")
        return ([("external_delegate_path", target.option("path"))]
                + ([("external_delegate_options", options)] if options else []))
    raise ValueError(f"target {target.label!r}: the adb backend runs {', '.join(BACKEND_TARGETS['adb'])}")


def target_environment(target: Target) -> List[Tuple[str, str]]:
    """Environment variables the target's delegate libraries need on the device."""
    if target.kind == "hexagon":
        return [("LD_LIBRARY_PATH", target.option("lib", DEFAULT_HEXAGON_LIB_DIR))]
    library_dir = posixpath.dirname(target.option("path") or "") if target.kind == "external" else ""
    if library_dir:
        return [("LD_LIBRARY_PATH", library_dir), ("ADSP_LIBRARY_PATH", f"{library_dir};{SYSTEM_DSP_DIRS}")]
    return []


def device_command(remote_binary: str, remote_model: str, target: Target, cpu_mask: str, threads: int,
                   warmup_runs: int, num_runs: int, op_profile: bool = False) -> str:
    """The shell command line run on the device for one model on one target."""
    flags = [("graph", remote_model), ("num_threads", str(threads)), ("warmup_runs", str(warmup_runs)),
             ("num_runs", str(num_runs))] + target_flags(target)
    flags += [("enable_op_profiling", "true")] if op_profile else []
    return " ".join([f"{name}={shlex.quote(value)}" for name, value in target_environment(target)]
                    + ["taskset", cpu_mask, shlex.quote(remote_binary)]
                    + [f"--{name}={shlex.quote(value)}" for name, value in flags])


def benchmark_on_devices(model_paths: Sequence[str], targets: Sequence[Target], benchmark_binary: str,
                         serials: Sequence[str] = (), cpu_mask: Optional[str] = None, threads: int = 1,
                         warmup_runs: int = DEFAULT_WARMUP_RUNS, num_runs: int = DEFAULT_NUM_RUNS,
                         adb: str = "adb", remote_dir: str = DEFAULT_REMOTE_DIR,
                         progress: Progress = True, op_profile: bool = False) -> List[Measurement]:
    """Times every model on every target of every requested device -> one Measurement per triple,
    in device, model, target order.

    serials: devices to use (default: every device in state "device"); a requested device that is
    absent or not ready gets error rows. cpu_mask: hex taskset mask overriding the single big core.
    progress: True for a progress bar, False for none, or a callable given each finished Measurement.
    op_profile: also profile the ops (--enable_op_profiling=true): details["op_profile"] per row.
    Raises ValueError / FileNotFoundError for bad arguments and AdbNotFoundError when adb cannot run,
    before anything runs on a device.
    """
    model_paths, targets = list(model_paths), list(targets)
    _check_arguments(model_paths, targets, benchmark_binary, threads)
    mask = _checked_mask(cpu_mask) if cpu_mask is not None else None
    states = list_devices(adb)
    serials = list(serials) or [serial for serial, state in states.items() if state == "device"]
    if not serials:
        raise AdbError(f"no Android device is ready (adb devices: {_describe_states(states)}); connect one "
                       "with USB debugging enabled and accept its authorization prompt")
    rows = _Rows(len(serials) * len(model_paths) * len(targets), progress)
    try:
        for serial in serials:
            if states.get(serial) != "device":
                reason = f"device {serial} is not connected (adb devices: {states.get(serial, 'not listed')})"
                rows.fail_all(model_paths, targets, serial, threads, reason)
                continue
            _benchmark_device(serial, model_paths, targets, benchmark_binary, mask, threads, warmup_runs,
                              num_runs, adb, remote_dir, rows, op_profile)
    finally:
        rows.close()
    return rows.measurements


def _benchmark_device(serial: str, model_paths: List[str], targets: List[Target], benchmark_binary: str,
                      mask: Optional[str], threads: int, warmup_runs: int, num_runs: int, adb: str,
                      remote_dir: str, rows: "_Rows", op_profile: bool = False) -> None:
    device = serial
    remote_binary = posixpath.join(remote_dir, "benchmark_model")
    try:
        device = device_info(serial, adb).label
        mask = mask or big_core_mask(serial, adb)
        _adb_checked(serial, ["shell", "mkdir", "-p", remote_dir], adb)
        _adb_checked(serial, ["push", benchmark_binary, remote_binary], adb, PUSH_TIMEOUT_S)
        _adb_checked(serial, ["shell", "chmod", "+x", remote_binary], adb)
    except AdbError as error:
        rows.fail_all(model_paths, targets, device, threads, f"setting up the device failed: {error}")
        return
    for model_path in model_paths:
        remote_model = posixpath.join(remote_dir, os.path.basename(model_path))
        try:
            with fileio.local_copy(model_path) as local_model:   # adb pushes local files only
                _adb_checked(serial, ["push", local_model, remote_model], adb, PUSH_TIMEOUT_S)
        except AdbError as error:
            rows.fail_all([model_path], targets, device, threads, f"pushing the model failed: {error}")
            continue
        for target in targets:
            command = device_command(remote_binary, remote_model, target, mask, threads, warmup_runs, num_runs,
                                     op_profile)
            rows.add(_run_benchmark(serial, model_path, target, device, threads, command, mask, adb, op_profile))


def _run_benchmark(serial: str, model_path: str, target: Target, device: str, threads: int, command: str,
                   mask: str, adb: str, op_profile: bool = False) -> Measurement:
    code, output = run_adb(serial, ["shell", command], adb, RUN_TIMEOUT_S)
    row = _row(model_path, target, device, threads,
               details={"serial": serial, "command": command, "cpu_mask": mask})
    if code != 0:
        row.error = _error(row, f"benchmark_model {_exit_reason(code)}: {' | '.join(failure_lines(output))}")
        return row
    try:
        latency, parsed = parse_benchmark_model_output(output)
    except BenchmarkModelError as error:
        row.error = _error(row, str(error))
        return row
    row.details.update(parsed)
    provider = DELEGATE_PROVIDERS.get(target.kind)
    status = parsed["delegates_applied"].get(provider)
    if status in ("not", "not created"):
        what = "executed no part of the model" if status == "not" else "could not be created"
        row.error = _error(row, f"the {provider} delegate {what}, so the {latency.mean_ms:.2f} ms measured "
                                "are the CPU's: " + " | ".join(failure_lines(output)))
    else:
        row.latency = latency
        if op_profile:
            _add_op_profile(row, output)
    return row


def _add_op_profile(row: Measurement, output: str) -> None:
    """details["op_profile"] from the output's per-node-type table, else details["op_profile_error"]."""
    try:
        profile = parse_op_profile(output)
    except BenchmarkModelError as error:
        row.details["op_profile_error"] = str(error)
        return
    profile.model_ms = row.latency.mean_ms
    row.details["op_profile"] = profile.to_dict()


class _Rows:
    """Collects measurements and reports each one to the progress bar or the progress callable."""

    def __init__(self, total: int, progress: Progress):
        self.measurements: List[Measurement] = []
        self._callback = progress if callable(progress) else None
        self._bar = None
        if progress is True:
            self._bar = progress_bar(total=total, desc="benchmark_model over adb", unit="run")

    def add(self, measurement: Measurement) -> None:
        self.measurements.append(measurement)
        if self._bar is not None:
            self._bar.set_postfix_str(f"{measurement.device} {os.path.basename(measurement.model_path)} "
                                      f"{measurement.target}", refresh=False)
            self._bar.update(1)
        if self._callback is not None:
            self._callback(measurement)

    def fail_all(self, model_paths: Sequence[str], targets: Sequence[Target], device: str, threads: int,
                 reason: str) -> None:
        for model_path in model_paths:
            for target in targets:
                row = _row(model_path, target, device, threads)
                row.error = _error(row, reason)
                self.add(row)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _row(model_path: str, target: Target, device: str, threads: int,
         details: Optional[dict] = None) -> Measurement:
    return Measurement(model_path=model_path, backend="adb", target=target.label, device=device,
                       threads=threads, details=details or {})


def _error(row: Measurement, reason: str) -> str:
    return f"{os.path.basename(row.model_path)} [{row.target}] on {row.device}: {reason}"


def _adb_checked(serial: str, args: Sequence[str], adb: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """run_adb that raises AdbError (with the failure lines) unless the command exits 0."""
    code, output = run_adb(serial, args, adb, timeout)
    if code != 0:
        raise AdbError(f"`adb -s {serial} {shlex.join(args)}` {_exit_reason(code)}: "
                       + " | ".join(failure_lines(output)))
    return output


def _exit_reason(code: int) -> str:
    if code == TIMED_OUT:
        return "timed out"
    signal_name = {int(number): number.name for number in signal.Signals}.get(code - 128)
    return f"exited with code {code}" + (f" ({signal_name})" if code > 128 and signal_name else "")


def _check_arguments(model_paths: List[str], targets: List[Target], benchmark_binary: str,
                     threads: int) -> None:
    if not model_paths or not targets:
        raise ValueError("benchmark_on_devices needs at least one model and one target")
    if not os.path.isfile(benchmark_binary):
        raise FileNotFoundError(f"no such file: {benchmark_binary}")
    for path in model_paths:
        if not fileio.isfile(path):
            raise FileNotFoundError(f"no such file: {path}")
    by_name: Dict[str, str] = {}
    for path in model_paths:
        other = by_name.setdefault(os.path.basename(path), path)
        if fileio.absolute(other) != fileio.absolute(path):
            raise ValueError(f"{other} and {path} have the same file name; the device directory holds one "
                             "file per name, so rename one of them")
    for target in targets:
        target_flags(target)  # ValueError for kinds the adb backend cannot run
        if target.kind == "external":
            parse_delegate_options(target.option("options") or "")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")


def _checked_mask(mask: str) -> str:
    digits = mask.lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]+", digits) or int(digits, 16) == 0:
        raise ValueError(f"cpu_mask {mask!r} is not a non-zero hexadecimal taskset mask such as '80'")
    return digits


def _describe_states(states: Dict[str, str]) -> str:
    return ", ".join(f"{serial} {state}" for serial, state in states.items()) or "none listed"


def _text(output: Union[bytes, str, None]) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""
