"""The package's one file layer: every file it reads or writes, local or in a bucket, goes through here.

A path with a scheme (`gs://`, `s3://`, `hdfs://`, TensorFlow's in-memory `ram://`) is handled by
`tf.io.gfile`, imported only when such a path is used; a local path by the standard library. So the
data-only modules (ArchSpecs, search spaces, label maps, configs) stay importable without
TensorFlow, and a bucket works wherever a local path does.

Atomic writes: every output goes to a temporary name next to its final name, `{final}.{pid}.tmp`,
and is then renamed onto the final name, so a killed run never leaves a half-written file under it
(a later run can tell from the pid which temporaries a dead process left). Locally the rename is
`os.replace`, atomic on POSIX. On object stores `tf.io.gfile.rename` is a server-side copy followed
by a delete: the final object appears whole or not at all, because an object store publishes an
object only when its upload or copy completes, but a killed process may leave its temporary behind.

Where a tool needs a genuinely local file (the TFLite interpreter, `adb push`, a compiler binary),
`local_copy` stages a remote file into a temporary folder and `local_output_dir` uploads what a tool
wrote locally.
"""
import builtins
import contextlib
import errno
import os
import shutil
import tempfile
from typing import IO, Callable, Iterator, List


def is_remote(path: str) -> bool:
    """True for a URL with a scheme (`gs://b/x`, `ram://x`), handled by tf.io.gfile."""
    return "://" in str(path)


def _gfile():
    import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
    import tensorflow as tf
    return tf.io.gfile


def absolute(path: str) -> str:
    """An absolute local path, or the URL unchanged."""
    return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def open_file(path: str, mode: str = "r") -> IO:
    """A file object for `path` (text modes read and write str, binary modes bytes)."""
    if is_remote(path):
        return _gfile().GFile(path, mode)
    return builtins.open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def read_bytes(path: str) -> bytes:
    """The file's content; a URL's errors are raised as the OSError a local path gives."""
    with os_errors(path), open_file(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
    return exists(path) and not isdir(path)


def getsize(path: str) -> int:
    return _gfile().stat(path).length if is_remote(path) else os.path.getsize(path)


def listdir(path: str) -> List[str]:
    """Names (not paths) in a folder, without the trailing `/` some object stores add to folders."""
    if is_remote(path):
        return sorted(name.rstrip("/") for name in _gfile().listdir(path))
    return sorted(os.listdir(path))


def glob(pattern: str) -> List[str]:
    if is_remote(pattern):
        return sorted(_gfile().glob(pattern))
    import glob as glob_module
    return sorted(glob_module.glob(os.path.expanduser(pattern)))


def makedirs(path: str) -> None:
    if is_remote(path):
        _gfile().makedirs(path)
    elif path:
        os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
    """Deletes a file; a missing one is not an error."""
    if not exists(path):
        return
    if is_remote(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def rmtree(path: str) -> None:
    """Deletes a folder and everything under it; a missing one is not an error."""
    if is_remote(path):
        if _gfile().exists(path):
            _gfile().rmtree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def rename(source: str, destination: str) -> None:
    """Moves a file (or, locally and on stores that support it, a folder) onto `destination`,
    replacing a file there."""
    if is_remote(source) or is_remote(destination):
        _gfile().rename(source, destination, overwrite=True)
    else:
        os.replace(source, destination)


def copy(source: str, destination: str) -> None:
    """Copies one file, between any two filesystems, replacing `destination`."""
    if is_remote(source) or is_remote(destination):
        _gfile().copy(source, destination, overwrite=True)
    else:
        shutil.copyfile(source, destination)


def copy_tree(source: str, destination: str) -> None:
    """Copies a folder's files and subfolders, between any two filesystems."""
    makedirs(destination)
    for name in listdir(source):
        path = os.path.join(source, name)
        if isdir(path):
            copy_tree(path, os.path.join(destination, name))
        else:
            copy(path, os.path.join(destination, name))


def temp_path(path: str) -> str:
    return f"{path}.{os.getpid()}.tmp"


def write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write(f)` on a temporary binary file next to `path`, then renames it to `path`.

    Missing parent folders are created; the temporary file is removed if anything fails.
    """
    path = absolute(path)
    makedirs(os.path.dirname(path))
    tmp = temp_path(path)
    try:
        with open_file(tmp, "wb") as f:
            write(f)
        rename(tmp, path)
    finally:
        remove(tmp)


def write_bytes_atomically(path: str, data: bytes) -> None:
    write_atomically(path, lambda f: f.write(data))


def write_text_atomically(path: str, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


def append_text(path: str, text: str) -> None:
    """Appends to a text file (created if missing). On object stores, which cannot append, the
    file is rewritten whole and atomically with the text added."""
    if is_remote(path):
        old = read_bytes(path) if exists(path) else b""
        write_bytes_atomically(path, old + text.encode("utf-8"))
        return
    with builtins.open(path, "a", encoding="utf-8") as f:
        f.write(text)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path holding `path`'s content for as long as the context lasts: the path itself when
    it is local, else a copy staged in a temporary folder (same file name), deleted afterwards."""
    if not is_remote(path):
        yield path
        return
    if not exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    with tempfile.TemporaryDirectory(prefix="mobiledets_staged_") as folder:
        local = os.path.join(folder, os.path.basename(path.rstrip("/")))
        copy(path, local)
        yield local


@contextlib.contextmanager
def local_output_dir(path: str) -> Iterator[str]:
    """A local folder for a tool that can only write locally; what it holds when the context ends
    without an error is copied to `path` (itself, when `path` is local)."""
    if not is_remote(path):
        makedirs(path)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mobiledets_output_") as folder:
        yield folder
        copy_tree(folder, path)


_ERRNO_OF_TF_ERROR = {"NotFoundError": errno.ENOENT, "PermissionDeniedError": errno.EACCES,
                      "AlreadyExistsError": errno.EEXIST}


@contextlib.contextmanager
def os_errors(path: str) -> Iterator[None]:
    """Raises what tf.io.gfile raises inside the block for the URL `path` as the OSError a local path
    gives (FileNotFoundError, PermissionError, FileExistsError, else OSError; `strerror` and
    `filename` set), so that one `except OSError` serves both."""
    try:
        yield
    except Exception as error:
        if not is_remote(path) or not isinstance(error, _tf_errors().OpError):
            raise
        code = _ERRNO_OF_TF_ERROR.get(type(error).__name__)
        if code is not None:
            raise OSError(code, os.strerror(code), path) from error
        raise OSError(errno.EIO, error.message or type(error).__name__, path) from error


def _tf_errors():
    import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
    import tensorflow as tf
    return tf.errors
