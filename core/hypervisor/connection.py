"""One libvirt connection per process, errors mapped to the project's, calls counted.

The connection opens lazily and is keyed by ``os.getpid()``: django-q2 forks its
workers, and a libvirt connection must never cross a fork. A broken connection is
reopened once for calls that only read; a call that changes something is never
repeated (it may have happened before libvirtd went away).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypeVar

import libvirt
from django.conf import settings

from core.errors import AppError, Conflict, ConnectionLost, Failed, Invalid, NotFound, Unavailable

T = TypeVar("T")

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
}
_INVALID = {
    libvirt.VIR_ERR_OPERATION_INVALID,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    libvirt.VIR_ERR_XML_ERROR,
    libvirt.VIR_ERR_XML_DETAIL,
    libvirt.VIR_ERR_INVALID_ARG,
    libvirt.VIR_ERR_NO_SUPPORT,
}
_CONFLICT = {libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_ERR_DOM_EXIST}
_BROKEN = {libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_NO_CONNECT}


def map_error(exc: libvirt.libvirtError) -> AppError:
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code in _NOT_FOUND:
        return NotFound(message)
    if code in _INVALID:
        return Invalid(message)
    if code in _CONFLICT or "cannot acquire state change lock" in message:
        return Conflict(message)
    if code in _BROKEN:
        return Unavailable(f"libvirtd is unreachable: {message}")
    return Failed(message)


def is_missing(exc: libvirt.libvirtError) -> bool:
    """The domain or snapshot vanished between a listing and a look at it."""
    return exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT)


# Silence libvirt's default handler, which prints every error to stderr; errors
# reach us as exceptions anyway.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_lock = threading.Lock()
_conn: libvirt.virConnect | None = None
_conn_pid: int | None = None


def _open() -> libvirt.virConnect:
    global _conn, _conn_pid
    with _lock:
        if _conn is None or _conn_pid != os.getpid():
            # After a fork the parent's connection object is not ours: drop it
            # without closing (closing would talk on the parent's socket).
            try:
                _conn = libvirt.open(settings.LIBVIRT_URI)
            except libvirt.libvirtError as exc:
                _conn = None
                raise Unavailable(
                    f"Cannot connect to libvirt at {settings.LIBVIRT_URI}: "
                    f"{exc.get_error_message()}. Is libvirtd running (scripts/hypervisor)?"
                ) from exc
            _conn_pid = os.getpid()
        return _conn


def _reset() -> None:
    global _conn
    with _lock:
        if _conn is not None and _conn_pid == os.getpid():
            with contextlib.suppress(libvirt.libvirtError):
                _conn.close()
        _conn = None


def _is_broken(exc: libvirt.libvirtError) -> bool:
    if exc.get_error_code() in _BROKEN:
        return True
    with contextlib.suppress(Exception):
        return _conn is not None and _conn.isAlive() == 0
    return True


def call(fn: Callable[[libvirt.virConnect], T], *, changes: str = "") -> T:
    """Run ``fn(conn)``; reconnect once if the connection broke; map errors.

    A call that ``changes`` something is not repeated on a new connection: it may
    have happened before the connection broke (libvirtd crashed mid-call), and
    doing it twice is worse than saying so. ConnectionLost tells the caller to
    look at what libvirt shows now.
    """
    conn = _open()
    try:
        return fn(conn)
    except libvirt.libvirtError as exc:
        if not _is_broken(exc):
            raise map_error(exc) from exc
        _reset()
        if changes:
            raise ConnectionLost(
                f"The connection to libvirtd broke while {changes} ({exc.get_error_message()}): it may or may not have happened."
            ) from exc
    conn = _open()
    try:
        return fn(conn)
    except libvirt.libvirtError as exc:
        raise map_error(exc) from exc


def close() -> None:
    """Drop this process's connection (tests, and after libvirtd restarts)."""
    _reset()


def version() -> str:
    def run(conn):
        v = conn.getLibVersion()
        return f"libvirt {v // 1000000}.{v // 1000 % 1000}.{v % 1000}"

    return call(run)


@contextlib.contextmanager
def count_calls() -> Iterator[Counter]:
    """Count libvirt API calls made inside the block (tests and benchmarks).

    Methods on the connection, domain and snapshot classes are wrapped while the
    block runs; names like ``virDomain.XMLDesc`` are the keys. ``name()`` and
    ``UUIDString()`` are local and not counted.
    """
    counter: Counter = Counter()
    local = {"name", "UUIDString", "getName", "getDomain", "getConnect", "connect", "domain"}
    patched = []
    for cls in (libvirt.virConnect, libvirt.virDomain, libvirt.virDomainSnapshot):
        for attr, value in list(vars(cls).items()):
            if attr.startswith("_") or attr in local or not callable(value):
                continue

            def wrapper(*args, __value=value, __key=f"{cls.__name__}.{attr}", **kwargs):
                counter[__key] += 1
                return __value(*args, **kwargs)

            patched.append((cls, attr, value))
            setattr(cls, attr, wrapper)
    try:
        yield counter
    finally:
        for cls, attr, value in patched:
            setattr(cls, attr, value)
