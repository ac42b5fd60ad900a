"""Files that are never seen half-written, and a lock that keeps two runs off one workdir."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile

# The version of the records this code writes (a stage's config.json, codes/meta.json, a preset's
# config.json and metadata.json). Bump it when a record changes meaning or gains a field that
# older records lack; readers treat a record without one as version 1 (before versions) and fill
# in what that version lacked:
#   1  no format_version; config.json may lack the quantizer-zoo fields (fsq_levels, ...: their
#      defaults) and codes/meta.json the prior family (implied by its grids).
#   2  format_version; every field of its time present; codes/meta.json names its prior_family.
FORMAT_VERSION = 2


def format_version(record: dict) -> int:
    """The format version of a stored record (1 for one written before versions existed)."""
    return int(record.get("format_version", 1))


class WorkdirError(RuntimeError):
    """A workdir that cannot be used: not writable, locked by another run, or holding another run."""


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def cache_dir() -> str:
    """Where computed data is cached: ``$VQVAE_CACHE_DIR``, else ``~/.cache/vqvae_tf``."""
    return os.environ.get("VQVAE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "vqvae_tf")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The permissions `open` / `mkdir` would give under the process umask. Temp files and
    directories are created 0600 / 0700; what we rename into place gets these instead, so that
    TF Serving running as another user, or a copied preset, can read it."""
    return (0o777 if directory else 0o666) & ~_umask()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` via a temp file + fsync + rename: readers see old or new, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_directory(final_path: str, overwrite: bool = False):
    """Yields a temp directory beside `final_path`; on success it is renamed to `final_path`.

    On any exception (or a kill) the final path never appears; a leftover temp directory is
    named ``.tmp-*`` so that nothing that scans for real outputs (TF Serving looks for numeric
    version directories) picks it up.
    """
    parent = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(final_path) and not overwrite:
        raise FileExistsError(f"{final_path} already exists (pass overwrite=True / --overwrite).")
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(final_path) + "-", dir=parent)
    try:
        os.chmod(tmp, default_mode(directory=True))
        yield tmp
        if os.path.exists(final_path):
            old = tempfile.mkdtemp(prefix=".old-" + os.path.basename(final_path) + "-", dir=parent)
            os.rename(final_path, os.path.join(old, "x"))
            os.rename(tmp, final_path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final_path)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_writable_dir(path: str, what: str = "workdir") -> str:
    """Creates `path` if needed and checks that files can be created in it."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise WorkdirError(f"The {what} {path!r} is not writable: {e.strerror or e}.") from e
    return path


class WorkdirLock:
    """An exclusive `flock` on ``<dir>/.lock``; the kernel drops it when the holder exits or dies.

    A second process that tries to take it gets a `WorkdirError` naming the holder's pid.
    """

    def __init__(self, directory: str, name: str = ".lock"):
        self.path = os.path.join(directory, name)
        self._fd = None

    def acquire(self) -> "WorkdirLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 64, 0).decode().strip()
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise WorkdirError(
                    f"{os.path.dirname(self.path)} is in use by another process"
                    f"{' (pid ' + holder + ')' if holder else ''}; wait for it to finish or use "
                    "another --workdir."
                ) from e
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
