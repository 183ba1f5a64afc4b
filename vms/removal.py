"""Deleting a VM: stop it, delete its snapshots one at a time, leaves first (never
``VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN``: it crashes libvirtd 9.0), undefine it, and
with ``storage`` remove the disk files no other VM (or backing chain) uses."""

from __future__ import annotations

import os

from access import policy
from core import hypervisor, storage
from core.errors import AppError, Invalid
from operations import runner
from operations.audit import Actor, attempt
from operations.models import Operation
from snapshots import records


def _disk_files(vm_uuid: str) -> dict[str, str]:
    """{file: format} of the VM's writable disks."""
    return {d.path: d.format for d in hypervisor.disks_of(hypervisor.domain_xml(vm_uuid)) if d.writable and d.path}


def request_delete(actor: Actor, vm_name: str, *, storage: bool = False) -> Operation:
    """Queue the deletion of a VM: stop it, delete its snapshots, undefine it (and its files if ``storage``)."""
    with attempt("vm.delete", actor, vm_name, params={"storage": storage}):
        vm = policy.get_vm(actor.user, vm_name, "delete")
        if not vm.persistent:
            raise Invalid(f"VM {vm.name} is transient (it is not defined, it only runs): force it off to remove it.")
        files = list(_disk_files(vm.uuid))
        params = {"storage": storage, "files": files, "snapshots": vm.snapshot_count, "vm_state": vm.state}
        return runner.submit("vm.delete", vm, actor=actor, params=params, target_uri="/api/vms")


def _run_delete(op: Operation, progress: runner.Progress) -> str:
    vm = runner.task_vm(op, "delete")
    if vm.state != "shutoff":
        progress(1, f"Forcing {vm.name} off")
        try:
            hypervisor.power(vm.uuid, "poweroff")
        except Invalid:
            pass  # stopped meanwhile (or crashed and already gone from QEMU)
    files = _disk_files(vm.uuid)
    deleted = _delete_all_snapshots(vm, op.username, progress)
    progress(92, f"Undefining {vm.name}")
    hypervisor.undefine_vm(vm.uuid)
    records.forget_vm(vm.uuid, op.username)
    parts = [f"Deleted VM {vm.name}" + (f" and its {deleted} snapshot{'s' if deleted != 1 else ''}." if deleted else ".")]
    if op.params.get("storage"):
        progress(95, "Removing disk files")
        removed, kept = _remove_files(list(files))
        if removed:
            parts.append("Disk files removed: " + ", ".join(removed) + ".")
        for path, why in kept:
            parts.append(f"Kept {path}: {why}.")
        files = {path: files[path] for path, _ in kept}
    elif files:
        parts.append("Disk files kept: " + ", ".join(files) + ".")
    for path, fmt in files.items():
        left = storage.qcow2_snapshot_tags(path, fmt)
        if left:
            parts.append(f"Note: {path} still holds internal snapshots libvirt did not know: {', '.join(left)}.")
    return " ".join(parts)


def _delete_all_snapshots(vm: hypervisor.VMInfo, username: str, progress: runner.Progress) -> int:
    """Delete every snapshot, leaves first, one at a time; returns how many."""
    names, _ = hypervisor.snapshot_names(vm.uuid)
    if not names:
        return 0
    infos = hypervisor.leaves_first(hypervisor.get_snapshots(vm.uuid, names))
    known = records.live(vm.uuid)
    for i, info in enumerate(infos):
        record = known.get(info.name)
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
            records.mark_deleted(record.pk, username)
    return len(infos)


def _remove_files(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Remove the files no other VM uses; returns (removed, [(kept, why)])."""
    users = hypervisor.files_in_use()
    backing = storage.backing_files({path: use.format for path, use in users.items()})
    removed, kept = [], []
    for path in paths:
        real = os.path.realpath(path)
        others = sorted({name for p, use in users.items() if os.path.realpath(p) == real for name in use.vms})
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


def _settle_delete(op: Operation) -> tuple[bool, str]:
    if hypervisor.vm_exists(op.vm_uuid):
        names, _ = hypervisor.snapshot_names(op.vm_uuid)
        return False, f"The VM is still defined with {len(names)} snapshots: delete it again to finish."
    records.forget_vm(op.vm_uuid, op.username)
    left = [p for p in op.params.get("files", []) if op.params.get("storage") and os.path.exists(p)]
    tail = f" Its disk files may remain: {', '.join(left)}." if left else ""
    return True, f"libvirt no longer has the VM: it was deleted.{tail}"


runner.register("vm.delete", label="delete VM", settle=_settle_delete)(_run_delete)
