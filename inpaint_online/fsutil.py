"""Files written safely and named readably.

* :func:`atomic_write_bytes`: temp file + fsync + ``os.replace``. The result gets the
  permissions the umask gives (``mkstemp`` creates 0600 files, which would otherwise survive
  the rename and lock every other user out of a shared cache).
* Temp files are named ``.NAME.HOST.PID.RAND.tmp``, so :func:`sweep_temp` can tell a stale
  one (its writer is dead, or it is older than ``STALE_SECONDS``) from one another process
  is writing right now (``--shard`` runs side by side) and removes only the stale ones.
* :func:`check_output_file`: an output path is checked before the work that produces it.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from pathlib import Path

from .errors import ConfigError, show

__all__ = ["ProcessLock", "LockHeld", "atomic_write_bytes", "temp_path", "sweep_temp",
           "file_mode", "check_output_file", "image_format", "save_image", "writable_dir",
           "STALE_SECONDS"]

STALE_SECONDS = 3600.0        # a temp file this old is stale whoever wrote it
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def file_mode() -> int:
    """``0o666`` less the process umask: what ``open()`` would give a new file."""
    try:   # Linux: read it without changing it (os.umask is process-wide: threads would race)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _temp_name(path: Path) -> str:
    return f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def temp_path(path: str | os.PathLike) -> Path:
    """A temp file beside ``path`` for a writer that streams into it (a video encoder) and
    renames it into place when done: named like :func:`atomic_write_bytes`'s, so
    :func:`sweep_temp` removes it once its writer is dead."""
    path = Path(path)
    return path.parent / _temp_name(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a kill) sees the old file or the new
    one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:           # name the file asked for, not the hidden temp file
        raise type(e)(e.errno, e.strerror, str(path)) from None
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and (not e.filename or e.filename == str(tmp)):
            # a failed write names no file ("[Errno 28] No space left on device"): name it
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True      # someone else's live process
    return True


def sweep_temp(folder: str | os.PathLike, *, recursive: bool = False,
               now: float | None = None) -> int:
    """Remove stale temp files of :func:`atomic_write_bytes` under ``folder``: those whose
    writer on this host is dead, or older than ``STALE_SECONDS``. Returns how many."""
    now = time.time() if now is None else now
    removed = 0
    stack = [Path(folder)]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if recursive and e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
                continue
            m = _TMP.match(e.name)
            if m is None:
                continue
            try:
                age = now - e.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            dead = m["host"] == _HOST and not _pid_alive(int(m["pid"]))
            if dead or age > STALE_SECONDS:
                try:
                    os.unlink(e.path)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def writable_dir(path: str | os.PathLike, flag: str, noun: str, *, create: bool = True) -> Path:
    """A folder a tool writes into (``flag``: its option, ``noun``: what it holds), checked
    before the work: not a file, created (``create``), writable. ConfigError otherwise."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{show(p)}: {flag} is a file, not a folder")
    if not create:
        return p
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{show(p)}: cannot create the {noun} folder ({e.strerror or e})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"{show(p)}: the {noun} folder is not writable")
    return p


def image_format(path: str | os.PathLike) -> str:
    """The Pillow format an image output path asks for by its extension, or ValueError."""
    from PIL import Image
    ext = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"{show(path)}: unknown image extension {ext or '(none)'!r}; "
                         "use .png, .jpg, .webp, .bmp or .tif")
    return fmt


def check_output_file(path: str | os.PathLike, *, image: bool = True) -> Path:
    """Refuse, before any work, an output path that cannot be written: a directory, a parent
    that is a file, an unknown image extension. Returns it as a Path."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{show(p)}: is a directory; give a file name "
                         f"(e.g. {show(p / ('out.png' if image else 'out.mp4'))})")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{show(p)}: cannot be written ({show(parent)} is a file)")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"{show(p)}: cannot be written (no permission in {show(parent)})")
            break
    if image:
        image_format(p)
    return p


def save_image(path: str | os.PathLike, array) -> None:
    """Encode an ``(H, W[, 3])`` uint8 array by the path's extension and write it atomically."""
    import io

    from PIL import Image
    fmt = image_format(path)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())


class LockHeld(OSError):
    """A :class:`ProcessLock` is held by another live process (``holder`` says which)."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{show(path)}: held by {holder}")
        self.holder = holder


class ProcessLock:
    """An advisory lock file one process holds while it writes (``flock``; the kernel drops
    it when the process dies, so a killed run never leaves anything locked). The file says
    who took it (``what`` (PID … on HOST, started …)), for the message a second process gets
    (:class:`LockHeld`). Where ``flock`` does not exist (Windows) it guards nothing."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self._fd = Path(path), None
        try:
            import fcntl
        except ImportError:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)    # the umask decides
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 400).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise LockHeld(self.path, holder) from None
        os.ftruncate(fd, 0)
        import socket
        import time
        os.write(fd, (f"{what} (PID {os.getpid()} on {socket.gethostname()}, started "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')})").encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)           # closing the descriptor drops the flock
            self._fd = None
