"""Atomic file writes: every output goes to a temporary name in the same folder, then `os.replace`.

A killed or failed run therefore never leaves a half-written file under a final name. Temporary
files are named `{final}.{pid}.tmp`, so a later run can tell which ones a dead process left behind.
"""
import os
from typing import IO, Callable


def temp_path(path: str) -> str:
    return f"{path}.{os.getpid()}.tmp"


def write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write(f)` on a temporary binary file next to `path`, then renames it to `path`.

    Missing parent folders are created; the temporary file is removed if anything fails.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomically(path: str, data: bytes) -> None:
    write_atomically(path, lambda f: f.write(data))


def write_text_atomically(path: str, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))
