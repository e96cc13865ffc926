"""Runs one binary in this process with its paths on TensorFlow's in-memory `ram://` filesystem.

    python ram_binary.py [--stage=LOCAL=ram://...]... [--list=ram://ROOT]... NAME [ARGS...]

Each --stage copies a local file or folder to a `ram://` path first (the filesystem lives only in
this process, so a test cannot prepare it from outside). Then `mobiledets_tf.bin.NAME` runs with
ARGS as its command line, as its console script would. Last, one line `RAM_FILES: [...]` lists
every file under the --list roots with its size (the in-memory filesystem cannot list its own
root), so the test sees what the binary wrote there; the exit status is the binary's.
"""
import importlib
import json
import os
import sys

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from absl import app

from mobiledets_tf import fileio


def stage(spec: str) -> None:
    local, remote = spec.split("=", 1)
    if os.path.isdir(local):
        fileio.copy_tree(local, remote)
    else:
        fileio.makedirs(os.path.dirname(remote))
        fileio.copy(local, remote)


def ram_files(root: str) -> list:
    """[path, size] of every file under `root`, in any subfolder."""
    if not fileio.isdir(root):
        return [[root, fileio.getsize(root)]] if fileio.exists(root) else []
    return sorted(entry for name in fileio.listdir(root) for entry in ram_files(os.path.join(root, name)))


def main() -> int:
    args = sys.argv[1:]
    roots = []
    while args and args[0].startswith(("--stage=", "--list=")):
        option, value = args.pop(0)[2:].split("=", 1)
        stage(value) if option == "stage" else roots.append(value)
    name, binary_args = args[0], args[1:]
    module = importlib.import_module(f"mobiledets_tf.bin.{name}")
    sys.argv = [f"mobiledets-{name}", *binary_args]
    code = 0
    try:
        app.run(module.main)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    sys.stdout.flush()
    print("RAM_FILES: " + json.dumps([entry for root in roots for entry in ram_files(root)]), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
