"""Errors that carry a message for the user (printed without a traceback by the CLIs), and
the helpers that put one on a single line (:func:`one_line`, :func:`show` for a path)."""

from __future__ import annotations

import os


class ConfigError(ValueError):
    """A configuration value or a file it names is wrong; the message says which and why."""


class DataError(RuntimeError):
    """The data cannot be read (a cache whose files are all missing or broken)."""


def user_message(e: BaseException) -> str:
    """The message of ``e`` without the worker traceback DataLoader wraps around it."""
    if "Original Traceback" not in str(e):
        return str(e)
    lines = [x for x in str(e).splitlines() if x.strip()]
    last = lines[-1] if lines else type(e).__name__
    for prefix in (f"{type(e).__module__}.{type(e).__name__}: ", f"{type(e).__name__}: "):
        last = last.removeprefix(prefix)
    return last


def one_line(text: str) -> str:
    """``text`` on one line (a reason that ends up in a list of ``path: reason`` lines)."""
    return " ".join(str(text).split())


def describe(e: BaseException) -> str:
    """One line for a CLI's ``error:``: an OSError as ``file: reason``, anything else as its
    message."""
    if isinstance(e, OSError) and e.filename:
        return f"{show(e.filename)}: {e.strerror or type(e).__name__}"
    return one_line(user_message(e))


def show(path: str | os.PathLike) -> str:
    """``path`` for a one-line message: as it is, or quoted (``'a\\nb.png'``) when it holds
    a newline, a tab or another unprintable character."""
    s = os.fspath(path)
    return s if s.isprintable() else repr(s)


def worker_died(e: BaseException, what: str) -> str:
    """The one line for a DataLoader's "worker exited unexpectedly" (the OOM killer is the
    usual cause): ``what`` stopped, why, and ``what``'s way on. Re-raises any other error
    (and this one too with ``INPAINT_DEBUG=1``)."""
    import re
    text = str(e)
    if not isinstance(e, RuntimeError) or "DataLoader worker" not in text \
            or os.environ.get("INPAINT_DEBUG"):
        raise e
    sig = re.search(r"killed by signal: ([A-Za-z]+)", text)
    how = f"killed by {sig.group(1)}" if sig else "exited unexpectedly"
    return (f"{what}: a data loading worker process {how} (out of memory? the kernel's OOM "
            "killer ends the largest process)")
