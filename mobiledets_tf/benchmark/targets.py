"""Where a model runs: a target is a delegate kind plus its options, parsed from `KIND[:key=value,...]`.

    cpu                          CPU kernels (XNNPACK on; `cpu:xnnpack=false` for the reference kernels)
    gpu                          GPU delegate (adb)
    nnapi:accelerator=qti-dsp    NNAPI, optionally pinned to one accelerator by name (adb, Android 10+)
    hexagon:lib=/data/local/tmp  legacy Hexagon delegate, `lib` = directory of libhexagon_nn_skel*.so (adb)
    external:path=/data/local/tmp/libQnnTFLiteDelegate.so,options=backend_type:htp
                                 any external delegate library with 'key:value;key:value' options
    edgetpu:device=usb:0         libedgetpu.so.1 (edgetpu backend; device usb:N or pci:N)
"""
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

TARGET_OPTIONS: Dict[str, Tuple[str, ...]] = {
    "cpu": ("xnnpack",),
    "gpu": (),
    "nnapi": ("accelerator",),
    "hexagon": ("lib",),
    "external": ("path", "options"),
    "edgetpu": ("device",),
}
REQUIRED_OPTIONS = {"external": ("path",)}
BACKEND_TARGETS = {
    "local": ("cpu", "external"),
    "adb": ("cpu", "gpu", "nnapi", "hexagon", "external"),
    "edgetpu": ("edgetpu",),
}
DEFAULT_TARGETS = {"local": "cpu", "adb": "cpu", "edgetpu": "edgetpu"}
BOOLEAN_VALUES = {"true": True, "1": True, "false": False, "0": False}


@dataclasses.dataclass(frozen=True)
class Target:
    kind: str
    options: Tuple[Tuple[str, str], ...] = ()

    def option(self, key: str, default: Optional[str] = None) -> Optional[str]:
        return dict(self.options).get(key, default)

    def flag(self, key: str, default: bool) -> bool:
        value = self.option(key)
        return default if value is None else BOOLEAN_VALUES[value.lower()]

    @property
    def label(self) -> str:
        """Short name for tables: `cpu`, `cpu(xnnpack=false)`, `external(libQnnTFLiteDelegate.so)`."""
        if not self.options:
            return self.kind
        shown = [f"{k}={v}" for k, v in self.options if k not in ("path", "options")]
        if self.option("path"):
            shown.insert(0, self.option("path").rsplit("/", 1)[-1])
        if self.option("options"):
            shown.append(self.option("options"))
        return f"{self.kind}({','.join(shown)})"


def parse_target(spec: str, backend: Optional[str] = None) -> Target:
    """`KIND[:key=value,key=value]` -> Target; ValueError naming the bad part (and the backend's kinds)."""
    kind, _, rest = spec.strip().partition(":")
    if kind not in TARGET_OPTIONS:
        raise ValueError(f"target {spec!r}: unknown kind {kind!r}; choose from {', '.join(TARGET_OPTIONS)}")
    if backend is not None and kind not in BACKEND_TARGETS[backend]:
        raise ValueError(f"target {spec!r}: the {backend} backend runs {', '.join(BACKEND_TARGETS[backend])}")
    options = []
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"target {spec!r}: {item!r} is not key=value")
        if key not in TARGET_OPTIONS[kind]:
            allowed = ", ".join(TARGET_OPTIONS[kind]) or "none"
            raise ValueError(f"target {spec!r}: {kind} has no option {key!r} (options: {allowed})")
        if key == "xnnpack" and value.lower() not in BOOLEAN_VALUES:
            raise ValueError(f"target {spec!r}: xnnpack must be true or false, not {value!r}")
        options.append((key, value))
    target = Target(kind, tuple(options))
    for key in REQUIRED_OPTIONS.get(kind, ()):
        if target.option(key) is None:
            raise ValueError(f"target {spec!r}: {kind} needs {key}=...")
    return target


def split_target_specs(text: str) -> List[str]:
    """'cpu,nnapi:accelerator=qti-dsp,external:path=x.so,options=a:b' -> one spec per target.

    A comma starts a new target only where the next piece names a target kind; otherwise the piece
    is one more key=value option of the current target.
    """
    specs: List[str] = []
    for piece in text.split(","):
        kind = piece.partition(":")[0].strip()
        if kind in TARGET_OPTIONS or not specs:
            specs.append(piece.strip())
        else:
            specs[-1] += "," + piece.strip()
    return [spec for spec in specs if spec]


def parse_targets(specs: Sequence[str], backend: str) -> Tuple[Target, ...]:
    """Targets from flag values (each one or several comma-joined specs); the backend's default if none."""
    flat = [spec for text in specs for spec in split_target_specs(text)]
    return tuple(parse_target(spec, backend) for spec in (flat or [DEFAULT_TARGETS[backend]]))


def parse_delegate_options(text: str) -> Dict[str, str]:
    """'key:value;key:value' (TFLite's external delegate option syntax) -> dict."""
    options = {}
    for item in filter(None, (text or "").split(";")):
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"delegate options: {item!r} is not key:value")
        options[key.strip()] = value.strip()
    return options
