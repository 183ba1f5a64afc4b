"""Disk files on the host: a sparse byte-for-byte copy (internal snapshots live inside
qcow2 files, and ``qemu-img convert`` would drop them) and what ``qemu-img info``
says of a file. ``qemu-img`` runs with ``-U`` (never locks a running VM's disk)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator

CHUNK = 4 * 2**20
_ZEROS = memoryview(bytes(CHUNK))


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the parts of a file that hold data; holes are skipped."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # only a hole is left
            if exc.errno == errno.EINVAL and pos == 0:
                yield 0, size  # no hole support: copy it all (zeros stay holes anyway)
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        pos = end


def data_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return sum(end - start for start, end in data_extents(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def copy_sparse(source: str, dest: str, on_bytes: Callable[[int], None], created: list[str]) -> None:
    """Copy ``source`` to a new file ``dest`` byte for byte; holes and zero blocks stay holes.

    ``dest`` must not exist (never overwrite someone's file); it is added to ``created``
    as soon as it exists, so a failure can remove it.
    """
    src = os.open(source, os.O_RDONLY)
    try:
        st = os.fstat(src)
        dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        created.append(dest)
        try:
            os.ftruncate(dst, st.st_size)
            for start, end in data_extents(src, st.st_size):
                pos = start
                while pos < end:
                    chunk = os.pread(src, min(CHUNK, end - pos), pos)
                    if not chunk:
                        raise OSError(errno.EIO, f"{source} ended early while it was copied")
                    if chunk != _ZEROS[: len(chunk)]:
                        _write_all(dst, memoryview(chunk), pos)
                    pos += len(chunk)
                    on_bytes(len(chunk))
            os.fsync(dst)
        finally:
            os.close(dst)
        os.chmod(dest, st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(dest, st.st_uid, st.st_gid)
    finally:
        os.close(src)


def _info(path: str, fmt: str, *extra: str, shared: bool = False) -> dict | list | None:
    """``qemu-img info`` of a file read as ``fmt``, the format its VM's definition gives:
    never probed, since a guest can write a qcow2 header (naming any host file as its
    backing file) into a raw disk. ``shared`` reads an image a running VM holds."""
    command = ["qemu-img", "info", "-f", fmt, "--output=json", *extra, path]
    if shared:
        command.insert(2, "--force-share")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return None if result.returncode else json.loads(result.stdout)


def backing_files(formats: dict[str, str]) -> dict[str, str]:
    """{real path of a backing file: the image built on it} for the images ``formats``
    names ({path: format}); an image of unknown format is not looked into."""
    found: dict[str, str] = {}
    for path, fmt in formats.items():
        if not fmt or fmt == "raw" or not os.path.isfile(path):
            continue  # a raw image has no backing file: nothing to look at
        # Other VMs may be running on these images: read them without taking their lock.
        chain = _info(path, fmt, "--backing-chain", shared=True)
        for image in chain if isinstance(chain, list) else [chain] if chain else []:
            backing = image.get("full-backing-filename") or image.get("backing-filename")
            if backing:
                found[os.path.realpath(backing)] = path
    return found


def qcow2_snapshot_tags(path: str, fmt: str = "qcow2") -> list[str]:
    """Internal snapshot tags inside a qcow2 file: [] if none, if it is not readable, or if
    its VM's definition says it is not qcow2 (its content is the guest's, not a header)."""
    if fmt != "qcow2" or not os.path.isfile(path):
        return []
    info = _info(path, "qcow2")
    return [s.get("name", "") for s in info.get("snapshots", [])] if isinstance(info, dict) else []
