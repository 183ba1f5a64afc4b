"""A VM's life: power actions, delete and clone — one function per user action.

Same shape as snapshots/services.py: ``request_*`` functions run in the web request
(permission, state, validation, then they queue an Operation: one per VM, enforced
by the database); ``_run_*`` functions run on a worker, check the permission and
libvirt's state again before acting, and report progress; ``_settle_*`` functions
decide from libvirt how a task ended whose worker died. Every attempt is audited.

Delete and clone follow DESIGN.md's libvirt facts: snapshots are deleted one at a
time, leaves first (never ``VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN``), before the VM is
undefined; a clone copies the qcow2 files byte for byte (internal snapshots live
inside them) and redefines each snapshot, parents first, with its saved definitions
rewritten to the clone's identity.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import subprocess
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from operations import audit, runner
from operations.audit import Actor
from operations.models import AuditEvent, Operation
from snapshots.models import SnapshotRecord
from snapshots.services import OUTSIDE, _created, _vm_for_task, attempt, load_tree, mark_deleted
from vms import access, grants, hypervisor
from vms.errors import AppError, Conflict, Failed, Invalid
from vms.models import Grant

log = logging.getLogger(__name__)


def vm_uri(name: str) -> str:
    return f"/api/vms/{quote(name)}"


def _depths(infos: Iterable[hypervisor.SnapshotInfo]) -> dict[str, int]:
    """Depth of each snapshot in its tree (roots 0), without recursion (chains may be long)."""
    parent = {i.name: i.parent for i in infos}
    depth: dict[str, int] = {}
    for name in parent:
        chain = []
        node = name
        while node in parent and node not in depth and node not in chain:
            chain.append(node)
            node = parent[node]
        base = depth.get(node, -1) if node in parent else -1
        for offset, item in enumerate(reversed(chain), start=1):
            depth[item] = base + offset
    return depth


def parents_first(infos: list[hypervisor.SnapshotInfo]) -> list[hypervisor.SnapshotInfo]:
    """Topological order: every snapshot after its parent (older first among equals)."""
    depth = _depths(infos)
    return sorted(infos, key=lambda i: (depth[i.name], i.created, i.name))


def leaves_first(infos: list[hypervisor.SnapshotInfo]) -> list[hypervisor.SnapshotInfo]:
    """Every snapshot before its parent: a descendant is always deeper than its ancestor."""
    depth = _depths(infos)
    return sorted(infos, key=lambda i: (-depth[i.name], -i.created, i.name))


# ---------------------------------------------------------------------------
# Power


@dataclass(frozen=True)
class PowerAction:
    name: str
    label: str  # in task lists: "start VM"
    allowed: tuple[str, ...]  # libvirt states in which the action makes sense
    result: str  # the state it leads to


POWER_ACTIONS = {
    "start": PowerAction("start", "start VM", ("shutoff",), "running"),
    "shutdown": PowerAction("shutdown", "shut down VM", ("running", "blocked"), "shutoff"),
    "poweroff": PowerAction(
        "poweroff", "force off VM", ("running", "blocked", "paused", "shutdown", "crashed", "pmsuspended", "nostate"), "shutoff"
    ),
    "reboot": PowerAction("reboot", "reboot VM", ("running", "blocked"), "running"),
    "suspend": PowerAction("suspend", "pause VM", ("running", "blocked"), "paused"),
    "resume": PowerAction("resume", "resume VM", ("paused",), "running"),
}
assert tuple(POWER_ACTIONS) == hypervisor.POWER_ACTIONS

# Why an action makes no sense in a state: (action, state) -> reason; "*" for any other state.
_REFUSALS = {
    ("start", "paused"): "VM {vm} is paused, not shut off: resume it instead.",
    ("start", "crashed"): "VM {vm} has crashed: force it off first, then start it.",
    ("start", "pmsuspended"): "VM {vm} was suspended by its guest OS: force it off first, then start it.",
    ("start", "shutdown"): "VM {vm} is shutting down: wait until it is shut off, then start it.",
    ("start", "*"): "VM {vm} is already running.",
    ("shutdown", "shutoff"): "VM {vm} is already shut off.",
    ("shutdown", "paused"): "VM {vm} is paused: a paused guest cannot answer a shutdown request. Resume it, or force it off.",
    ("shutdown", "shutdown"): "VM {vm} is already shutting down: wait, or force it off.",
    ("shutdown", "*"): "VM {vm} is {state}: its guest OS cannot shut down now; force it off instead.",
    ("poweroff", "*"): "VM {vm} is already shut off.",
    ("reboot", "shutoff"): "VM {vm} is shut off: start it instead.",
    ("reboot", "paused"): "VM {vm} is paused: resume it first.",
    ("reboot", "*"): "VM {vm} is {state}: its guest OS cannot reboot now.",
    ("suspend", "paused"): "VM {vm} is already paused.",
    ("suspend", "shutoff"): "VM {vm} is shut off: there is nothing to pause.",
    ("suspend", "*"): "VM {vm} is {state}: only a running VM can be paused.",
    ("resume", "shutoff"): "VM {vm} is shut off: start it instead.",
    ("resume", "running"): "VM {vm} is running, not paused.",
    ("resume", "blocked"): "VM {vm} is running, not paused.",
    ("resume", "*"): "VM {vm} is {state}, not paused.",
}


def power_refusal(action: str, vm: hypervisor.VMInfo) -> str | None:
    """Why ``action`` makes no sense for ``vm`` as it is now, or None if it does."""
    if action == "resume" and vm.state == "paused" and vm.busy_with_snapshot:
        return f"VM {vm.name} is paused while QEMU saves or loads a snapshot: it carries on by itself when that ends."
    if vm.state in POWER_ACTIONS[action].allowed:
        return None
    template = _REFUSALS.get((action, vm.state)) or _REFUSALS[(action, "*")]
    return template.format(vm=vm.name, state=vm.state)


def shutdown_timeout() -> int:
    """Seconds a shutdown waits for the guest OS (SHUTDOWN_TIMEOUT, default 60)."""
    return settings.SHUTDOWN_TIMEOUT


def max_shutdown_timeout() -> int:
    # The wait must end well before django-q2 kills the task.
    return max(10, settings.TASK_TIMEOUT - 60)


def validate_timeout(timeout) -> int:
    if timeout is None:
        return shutdown_timeout()
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= max_shutdown_timeout():
        raise Invalid(f"The shutdown timeout must be a whole number of seconds from 1 to {max_shutdown_timeout()}.")
    return timeout


def request_power(actor: Actor, vm_name: str, action: str, *, timeout: int | None = None) -> Operation:
    """Queue a power action (``start``, ``shutdown``, ``poweroff``, ``reboot``, ``suspend``, ``resume``)."""
    with attempt(f"vm.{action}", actor, vm_name, params={"timeout": timeout} if timeout is not None else None):
        if action not in POWER_ACTIONS:
            raise Invalid(f"Unknown power action {action!r}: use {', '.join(POWER_ACTIONS)}.")
        vm = access.get_vm(actor.user, vm_name, "power")
        refusal = power_refusal(action, vm)
        if refusal:
            raise Conflict(refusal)
        params = {"action": action, "vm_state": vm.state}
        if action == "shutdown":
            params["timeout"] = validate_timeout(timeout)
        return runner.submit(f"vm.{action}", vm, actor=actor, params=params, target_uri=vm_uri(vm.name))


def _run_power(op: Operation, progress: runner.Progress) -> str:
    action = op.params["action"]
    vm = _vm_for_task(op, "power")
    refusal = power_refusal(action, vm)
    if refusal:
        raise Conflict(f"{refusal} Nothing was done: the VM changed after the request.")
    if action == "shutdown":
        return _shutdown(vm, op.params.get("timeout") or shutdown_timeout(), progress)
    progress(10, {"start": "Starting", "poweroff": "Forcing off", "reboot": "Asking the guest OS to reboot"}.get(action, action))
    hypervisor.power(vm.uuid, action)
    state = hypervisor.vm_state(vm.uuid)
    if action == "reboot":
        return (
            f"Asked the guest OS of {vm.name} to reboot (ACPI); it restarts by itself. A guest without an OS or "
            "without ACPI support ignores the request: force it off, then start it."
        )
    done = {"start": "started", "poweroff": "forced off", "suspend": "paused", "resume": "resumed"}[action]
    return f"VM {vm.name} {done}; it is {state}."


def _shutdown(vm: hypervisor.VMInfo, timeout: int, progress: runner.Progress) -> str:
    progress(0, f"Asking the guest OS of {vm.name} to shut down (ACPI)")
    hypervisor.power(vm.uuid, "shutdown")
    began = time.monotonic()
    while True:
        state = hypervisor.vm_state(vm.uuid)
        elapsed = time.monotonic() - began
        if state == "shutoff":
            return f"VM {vm.name} shut down ({elapsed:.0f} s)."
        if elapsed >= timeout:
            raise Failed(
                f"VM {vm.name} did not shut down within {timeout} s of the ACPI request (it is {state}): its guest OS "
                "ignored the request or is still busy; a VM without an OS or without ACPI support never answers. "
                "Try again with a longer timeout, or force it off (like pulling the plug: unsaved data in the guest is lost)."
            )
        progress(int(100 * elapsed / timeout), f"Waiting for the guest OS to shut down: {elapsed:.0f} s of {timeout} s")
        time.sleep(min(0.5, max(0.05, timeout - elapsed)))


def _settle_power(op: Operation) -> tuple[bool, str]:
    action = POWER_ACTIONS[op.params["action"]]
    state = hypervisor.vm_state(op.vm_uuid)
    if state == action.result:
        return True, f"libvirt shows the VM {state}: the {action.label} took effect."
    return False, f"libvirt shows the VM {state}: the {action.label} did not complete."


for _action in POWER_ACTIONS.values():
    runner.register(f"vm.{_action.name}", label=_action.label, settle=_settle_power)(_run_power)


# ---------------------------------------------------------------------------
# Delete


def request_delete(actor: Actor, vm_name: str, *, storage: bool = False) -> Operation:
    """Queue the deletion of a VM: stop it, delete its snapshots, undefine it (and its files if ``storage``)."""
    with attempt("vm.delete", actor, vm_name, params={"storage": storage}):
        vm = access.get_vm(actor.user, vm_name, "delete")
        if not vm.persistent:
            raise Invalid(f"VM {vm.name} is transient (it is not defined, it only runs): force it off to remove it.")
        files = [d.path for d in hypervisor.disk_files(hypervisor.domain_xml(vm.uuid)) if d.writable and d.path]
        params = {"storage": storage, "files": files, "snapshots": vm.snapshot_count, "vm_state": vm.state}
        return runner.submit("vm.delete", vm, actor=actor, params=params, target_uri="/api/vms")


def _run_delete(op: Operation, progress: runner.Progress) -> str:
    vm = _vm_for_task(op, "delete")
    if vm.state != "shutoff":
        progress(1, f"Forcing {vm.name} off")
        try:
            hypervisor.power(vm.uuid, "poweroff")
        except Invalid:
            pass  # stopped meanwhile (or crashed and already gone from QEMU)
    files = [d.path for d in hypervisor.disk_files(hypervisor.domain_xml(vm.uuid)) if d.writable and d.path]
    deleted = _delete_all_snapshots(vm, op.username, progress)
    progress(92, f"Undefining {vm.name}")
    hypervisor.undefine_vm(vm.uuid)
    _forget_snapshots(vm.uuid, op.username)
    parts = [f"Deleted VM {vm.name}" + (f" and its {deleted} snapshot{'s' if deleted != 1 else ''}." if deleted else ".")]
    if op.params.get("storage"):
        progress(95, "Removing disk files")
        removed, kept = _remove_files(files)
        if removed:
            parts.append("Disk files removed: " + ", ".join(removed) + ".")
        for path, why in kept:
            parts.append(f"Kept {path}: {why}.")
        files = [path for path, _ in kept]
    elif files:
        parts.append("Disk files kept: " + ", ".join(files) + ".")
    for path in files:
        left = qcow2_snapshot_tags(path)
        if left:
            parts.append(f"Note: {path} still holds internal snapshots libvirt did not know: {', '.join(left)}.")
    return " ".join(parts)


def _delete_all_snapshots(vm: hypervisor.VMInfo, username: str, progress: runner.Progress) -> int:
    """Delete every snapshot, leaves first, one at a time; returns how many."""
    names, _ = hypervisor.snapshot_names(vm.uuid)
    if not names:
        return 0
    infos = leaves_first(hypervisor.get_snapshots(vm.uuid, names))
    records = {r.libvirt_name: r for r in SnapshotRecord.objects.filter(vm_uuid=vm.uuid, deleted_at__isnull=True)}
    for i, info in enumerate(infos):
        record = records.get(info.name)
        shown = record.name if record else info.name
        progress(5 + int(85 * i / len(infos)), f"Deleting snapshot {shown} ({i + 1} of {len(infos)})")
        try:
            hypervisor.delete_snapshot(vm.uuid, info.name)
        except hypervisor.NotFound:
            pass  # gone meanwhile
        except AppError as exc:
            raise type(exc)(
                f"Deleted {i} of {len(infos)} snapshots of {vm.name}, then snapshot {shown} failed: {exc.message} "
                "The VM is still defined: delete it again to finish."
            ) from exc
        if record:
            mark_deleted(record.pk, username)
    return len(infos)


def _forget_snapshots(vm_uuid: str, username: str) -> None:
    """The VM is gone: every snapshot record still live is history now."""
    for pk in SnapshotRecord.objects.filter(vm_uuid=vm_uuid, deleted_at__isnull=True).values_list("pk", flat=True):
        mark_deleted(pk, username)


def _remove_files(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Remove the files no other VM uses; returns (removed, [(kept, why)])."""
    users = hypervisor.files_in_use()
    backing = _backing_files(users)
    removed, kept = [], []
    for path in paths:
        real = os.path.realpath(path)
        others = sorted({name for p, names in users.items() if os.path.realpath(p) == real for name in names})
        if others:
            kept.append((path, "used by " + ", ".join(others)))
        elif real in backing:
            kept.append((path, f"it is the backing file of {backing[real]}"))
        elif not os.path.exists(path):
            continue
        else:
            try:
                os.remove(path)
            except OSError as exc:
                kept.append((path, f"could not remove it: {exc.strerror}"))
            else:
                removed.append(path)
    return removed, kept


def _backing_files(users: dict[str, list[str]]) -> dict[str, str]:
    """{real path of a backing file: the image built on it} for every file other VMs use."""
    found: dict[str, str] = {}
    for path in users:
        if not os.path.isfile(path):
            continue
        result = subprocess.run(
            ["qemu-img", "info", "-U", "--backing-chain", "--output=json", path], capture_output=True, text=True, timeout=60
        )
        if result.returncode:
            continue
        chain = json.loads(result.stdout)
        for image in chain if isinstance(chain, list) else [chain]:
            backing = image.get("full-backing-filename") or image.get("backing-filename")
            if backing:
                found[os.path.realpath(backing)] = path
    return found


def qcow2_snapshot_tags(path: str) -> list[str]:
    """Internal snapshot tags inside a qcow2 file ([] if none, or if it is not a readable qcow2)."""
    if not os.path.isfile(path):
        return []
    result = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], capture_output=True, text=True, timeout=60)
    if result.returncode:
        return []
    return [s.get("name", "") for s in json.loads(result.stdout).get("snapshots", [])]


def _settle_delete(op: Operation) -> tuple[bool, str]:
    if hypervisor.vm_exists(op.vm_uuid):
        names, _ = hypervisor.snapshot_names(op.vm_uuid)
        return False, f"The VM is still defined with {len(names)} snapshots: delete it again to finish."
    _forget_snapshots(op.vm_uuid, op.username)
    left = [p for p in op.params.get("files", []) if op.params.get("storage") and os.path.exists(p)]
    tail = f" Its disk files may remain: {', '.join(left)}." if left else ""
    return True, f"libvirt no longer has the VM: it was deleted.{tail}"


runner.register("vm.delete", label="delete VM", settle=_settle_delete)(_run_delete)


# ---------------------------------------------------------------------------
# Clone

VM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
VM_NAME_RULE = "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit, not only digits"


def validate_vm_name(name: str) -> str:
    if not isinstance(name, str) or not VM_NAME_RE.match(name) or name.isdigit() or _looks_like_uuid(name):
        raise Invalid(f"Invalid VM name {name!r}: use {VM_NAME_RULE} (and not a UUID).")
    return name


def _looks_like_uuid(name: str) -> bool:
    try:
        uuidlib.UUID(name)
    except ValueError:
        return False
    return True


def clone_files(vm: hypervisor.VMInfo, xml: str, name: str) -> dict[str, str]:
    """{source file: the clone's copy} for every writable disk (and the NVRAM file).

    Copies sit next to their source and are named after the clone: ``<clone>.qcow2``,
    or ``<clone>-<target>.qcow2`` when the VM has several disks to copy.
    """
    disks = [d for d in hypervisor.disk_files(xml) if d.writable]
    for disk in disks:
        if disk.type != "file" or not disk.path:
            raise Invalid(
                f"Disk {disk.target} of {vm.name} is a {disk.type} disk: a clone copies disk files only. "
                "Make it read-only or shareable, or detach it, to clone the VM."
            )
    files: dict[str, str] = {}
    for disk in disks:
        if disk.path in files:
            continue
        source = Path(disk.path)
        suffix = source.suffix or (f".{disk.format}" if disk.format else "")
        stem = name if len(disks) == 1 else f"{name}-{disk.target}"
        files[disk.path] = str(source.with_name(stem + suffix))
    nvram = hypervisor.nvram_path(xml)
    if nvram and os.path.exists(nvram):
        files[nvram] = str(Path(nvram).with_name(f"{name}_VARS{Path(nvram).suffix or '.fd'}"))
    return files


def default_clone_name(vm: hypervisor.VMInfo, xml: str) -> str:
    """``<vm>-clone``, then ``<vm>-clone-2``…: the first free name whose files are free too."""
    n = 1
    while True:
        name = f"{vm.name}-clone" if n == 1 else f"{vm.name}-clone-{n}"
        if not hypervisor.vm_exists(name) and not any(os.path.exists(p) for p in clone_files(vm, xml, name).values()):
            return name
        n += 1


def request_clone(actor: Actor, vm_name: str, name: str | None = None) -> Operation:
    """Queue a clone of a shut-off VM with its snapshots; the Task's target is the clone."""
    with attempt("vm.clone", actor, vm_name, params={"name": name} if name else None):
        vm = access.get_vm(actor.user, vm_name, "clone")
        if name:
            validate_vm_name(name)
        if vm.state != "shutoff":
            raise Conflict(
                f"VM {vm.name} is {vm.state}: shut it down before cloning it (its disks are copied and must not change meanwhile)"
            )
        if not vm.persistent:
            raise Invalid(f"VM {vm.name} is transient (not defined): only a defined VM can be cloned.")
        xml = hypervisor.domain_xml(vm.uuid)
        if name:
            if hypervisor.vm_exists(name):
                raise Conflict(f"A VM named {name!r} exists already: choose another name.")
            files = clone_files(vm, xml, name)
            taken = [p for p in files.values() if os.path.exists(p)]
            if taken:
                raise Conflict(f"File {taken[0]} exists already: choose another name for the clone.")
        else:
            name = default_clone_name(vm, xml)
            files = clone_files(vm, xml, name)
        load_tree(vm)  # records snapshots made outside the app, so the clone gets their names too
        params = {"name": name, "uuid": str(uuidlib.uuid4()), "files": files, "snapshots": vm.snapshot_count}
        return runner.submit("vm.clone", vm, actor=actor, params=params, target_uri=vm_uri(name))


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


class _CopyProgress:
    """Bytes copied / total, written at most twice a second."""

    def __init__(self, progress: runner.Progress, total: int, start: int, end: int):
        self.progress, self.total, self.start, self.end = progress, max(total, 1), start, end
        self.copied, self.last, self.what = 0, 0.0, ""

    def __call__(self, n: int) -> None:
        self.copied += n
        now = time.monotonic()
        if now - self.last >= 0.5 or self.copied >= self.total:
            self.last = now
            self.report()

    def report(self) -> None:
        share = min(1.0, self.copied / self.total)
        self.progress(
            self.start + int((self.end - self.start) * share),
            f"Copying {self.what}: {_mib(self.copied)} of {_mib(self.total)} MiB ({share:.0%})",
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def _run_clone(op: Operation, progress: runner.Progress) -> str:
    source = _vm_for_task(op, "clone")
    name, clone_uuid, files = op.params["name"], op.params["uuid"], dict(op.params["files"])
    if source.state != "shutoff":
        raise Conflict(f"VM {source.name} is {source.state} now: shut it down, then clone it again. Nothing was copied.")
    if hypervisor.vm_exists(clone_uuid) or hypervisor.vm_exists(name):
        raise Conflict(f"A VM named {name!r} exists now: choose another name. Nothing was copied.")
    xml = hypervisor.domain_xml(source.uuid)
    if clone_files(source, xml, name) != files:
        raise Conflict(f"The disks of {source.name} changed after the request: clone it again. Nothing was copied.")
    snapshots, current = hypervisor.snapshots_with_xml(source.uuid)
    for info in snapshots:
        unknown = sorted(hypervisor.snapshot_domain_files(info.xml) - set(files))
        if unknown:
            raise Invalid(
                f"Snapshot {info.name} of {source.name} uses {unknown[0]}, a disk the VM no longer has: a clone reverted "
                "to it would write to that file. Delete that snapshot, or attach the disk again, to clone the VM."
            )
    identity = hypervisor.CloneIdentity(name=name, uuid=clone_uuid, paths=files)
    created: list[str] = []
    defined = False
    step = "copying the disks"
    try:
        sizes = {path: data_size(path) for path in files}
        copy = _CopyProgress(progress, sum(sizes.values()), 0, 90)
        for path, dest in files.items():
            copy.what = f"{Path(path).name} → {Path(dest).name}"
            copy.report()
            copy_sparse(path, dest, copy, created)
        step = "defining the clone"
        progress(91, f"Defining {name}")
        clone = hypervisor.define_vm(hypervisor.clone_domain_xml(xml, identity))
        defined = True
        ordered = parents_first(snapshots)
        for i, info in enumerate(ordered):
            step = f"redefining snapshot {info.name}"
            progress(92 + int(6 * i / len(ordered)), f"Redefining snapshot {info.name} on {name} ({i + 1} of {len(ordered)})")
            hypervisor.redefine_snapshot(
                clone_uuid, hypervisor.clone_snapshot_xml(info.xml, identity), current=info.name == current
            )
        step = "checking the clone"
        names, clone_current = hypervisor.snapshot_names(clone_uuid)
        if sorted(names) != sorted(i.name for i in snapshots) or clone_current != current:
            raise Failed(f"libvirt shows snapshots {sorted(names)} (current {clone_current or 'none'}) on the clone.")
        step = "recording the clone"
        _finish_clone(op, hypervisor.get_vm(clone_uuid), snapshots)
    except Exception as exc:  # noqa: BLE001 - whatever broke, the partial clone goes, then the reason is reported
        reason = exc.message if isinstance(exc, AppError) else _os_reason(exc)
        undone = _remove_partial_clone(clone_uuid if defined else "", created)
        raise Failed(
            f"Cloning {source.name} to {name} failed while {step}: {reason} {undone} {source.name} was not changed."
        ) from exc
    count = len(snapshots)
    total = _mib(sum(sizes.values()))
    with_snaps = f" with its {count} snapshot{'s' if count != 1 else ''}" if count else ""
    return f"Cloned {source.name} to {clone.name}{with_snaps} ({total} MiB of data copied)."


def _os_reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"the disk is full{where}: free some space, then try again."
        return f"{exc.strerror or exc}{where}."
    return f"unexpected error: {exc}."


def _remove_partial_clone(clone_uuid: str, created: list[str]) -> str:
    """Undefine the partial clone (only ours, by UUID) and remove the files this task created."""
    problems = []
    if clone_uuid:
        try:
            if hypervisor.vm_exists(clone_uuid):
                hypervisor.undefine_vm(clone_uuid)
        except AppError as exc:
            problems.append(f"undefining it failed ({exc.message})")
    for path in created:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"{path} could not be removed ({exc.strerror})")
    if problems:
        return "The partial clone was not fully removed: " + "; ".join(problems) + "."
    return "The partial clone was removed."


@transaction.atomic
def _finish_clone(op: Operation, clone: hypervisor.VMInfo, snapshots: list[hypervisor.SnapshotInfo]) -> None:
    """Snapshot records for the clone (names and descriptions as on the source), access, audit."""
    if SnapshotRecord.objects.filter(vm_uuid=clone.uuid).exists():
        return  # recorded already (a settled task)
    originals = {r.libvirt_name: r for r in SnapshotRecord.objects.filter(vm_uuid=op.vm_uuid, deleted_at__isnull=True)}
    made: dict[str, SnapshotRecord] = {}
    shown: set[str] = set()
    for info in parents_first(snapshots):
        original = originals.get(info.name)
        display = original.name if original else info.name
        if display in shown:
            display = f"{display}-{info.name}"
        shown.add(display)
        made[info.name] = SnapshotRecord.objects.create(
            vm_uuid=clone.uuid,
            vm_name=clone.name,
            libvirt_name=info.name,
            name=display,
            description=original.description if original else info.description,
            state=info.state,
            memory=info.memory,
            created=original.created if original else _created(info.created),
            parent=made.get(info.parent),
            origin=SnapshotRecord.Origin.CLONE,
            created_by=original.created_by if original else None,
            created_by_username=original.created_by_username if original else OUTSIDE,
        )
    actor = Actor.from_operation(op)
    roles = _share_clone(op, clone, actor)
    given = f" {op.username} was given role {', '.join(roles)} on it, as on {op.vm_name}." if roles else ""
    audit.record(
        "vm.clone",
        actor=actor,
        vm=clone,
        params={"source": op.vm_name, "source_uuid": op.vm_uuid},
        operation=op,
        stage=AuditEvent.Stage.EVENT,
        message=f"Created as a clone of {op.vm_name} with {len(made)} snapshots (task #{op.pk}).{given}",
    )


def _share_clone(op: Operation, clone: hypervisor.VMInfo, actor: Actor) -> list[str]:
    """The requester gets on the clone the roles they hold on the source VM itself.

    Roles held on all VMs cover the clone already; without this, a user with
    ``clone`` on one VM could not see the clone they made. Returns the roles given.
    """
    user = op.user
    if user is None or user.is_superuser:
        return []
    roles = {
        g.role
        for g in Grant.objects.filter(Q(user=user) | Q(group__user=user), vm_uuid=op.vm_uuid).select_related("role").distinct()
    }
    given = []
    for role in sorted(roles, key=lambda r: r.name):
        _, new = grants.grant_role(role, user=user, vm=clone.uuid, actor=actor)
        if new:
            given.append(role.name)
    return given


def _settle_clone(op: Operation) -> tuple[bool, str]:
    clone_uuid = op.params["uuid"]
    if hypervisor.vm_exists(clone_uuid):
        snapshots, current = hypervisor.snapshots_with_xml(clone_uuid)
        source_names, source_current = hypervisor.snapshot_names(op.vm_uuid)
        if sorted(i.name for i in snapshots) == sorted(source_names) and current == source_current:
            clone = hypervisor.get_vm(clone_uuid)
            _finish_clone(op, clone, snapshots)
            return True, f"libvirt shows the clone {clone.name} with all {len(snapshots)} snapshots: it was completed."
    # Only files this clone would have made, and none another VM uses.
    users = hypervisor.files_in_use(exclude=clone_uuid)
    ours = [p for p in op.params["files"].values() if os.path.exists(p) and p not in users]
    undone = _remove_partial_clone(clone_uuid if hypervisor.vm_exists(clone_uuid) else "", ours)
    return False, f"The clone {op.params['name']} was not complete. {undone}"


runner.register("vm.clone", label="clone VM", settle=_settle_clone)(_run_clone)
