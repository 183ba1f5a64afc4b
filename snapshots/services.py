"""Every snapshot action, one function each, shared by the HTML views, the API and
the django-q2 tasks.

``request_*`` functions run in the web request: permission, validation, then they
queue an Operation (or, for a rename, make the change). ``_run_*`` functions run on
a worker, check the permission again and act; a task runs once (operations.runner).
``_settle_*`` functions decide from libvirt how a task ended whose worker died.
Every attempt — allowed, denied or failed — leaves an audit row.
"""

from __future__ import annotations

from urllib.parse import quote

from django.db import transaction

from access import policy
from core import hypervisor
from core.errors import AppError, Conflict, Invalid, NotFound
from core.names import SNAPSHOT_NAME
from operations import audit, runner
from operations.audit import Actor, attempt
from operations.models import AuditEvent, Operation
from snapshots import records
from snapshots.models import SnapshotRecord
from snapshots.tree import Tree, default_name, libvirt_name_for, load_tree, reconcile

MAX_DESCRIPTION = 1000


def validate_description(description: str) -> str:
    if not isinstance(description, str):
        raise Invalid("The description must be text.", field="description")
    if len(description) > MAX_DESCRIPTION:
        raise Invalid(
            f"The description is {len(description)} characters long; the limit is {MAX_DESCRIPTION}.", field="description"
        )
    return description


def snapshot_uri(vm_name: str, name: str) -> str:
    return f"/api/vms/{quote(vm_name)}/snapshots/{quote(name)}"


def snapshot_blockers(vm: hypervisor.VMInfo) -> list[str]:
    """Reasons why libvirt 9.0 cannot take (and revert) an internal snapshot of ``vm``."""
    reasons = []
    if vm.pflash:
        reasons.append("This VM boots with UEFI firmware (pflash): libvirt 9.0 cannot take internal snapshots of it.")
    for disk in vm.disks:
        if disk.needs_qcow2 and disk.format != "qcow2":
            reasons.append(
                f"Disk {disk.target} ({disk.source or 'no source'}) is in {disk.format or 'an unknown'} "
                "format; internal snapshots need every writable disk in qcow2 format. "
                "Convert it with qemu-img convert -O qcow2, or make it read-only."
            )
    return reasons


def _check_snapshottable(vm: hypervisor.VMInfo) -> None:
    blockers = snapshot_blockers(vm)
    if blockers:
        raise Invalid(" ".join(blockers))


def _name_taken(vm: hypervisor.VMInfo, name: str) -> Conflict:
    return Conflict(f"VM {vm.name} already has a snapshot named {name!r}: choose another name.", field="name")


# ---------------------------------------------------------------------------
# Create: three libvirt calls in the request (the VM), three on the worker (take it)


def request_create(actor: Actor, vm_name: str, name: str | None = None, description: str = "") -> Operation:
    with attempt("snapshot.create", actor, vm_name, name or "", {"description": description} if description else None):
        vm = policy.get_vm(actor.user, vm_name, "snapshot_create", snapshots=False)
        _check_snapshottable(vm)
        description = validate_description(description or "")
        known = records.live(vm.uuid)
        if name:
            SNAPSHOT_NAME.validate(name)
            if name in {r.name for r in known.values()}:
                # The records may be stale (deleted outside the app): ask libvirt before refusing.
                if name in load_tree(vm).by_name:
                    raise _name_taken(vm, name)
                known = records.live(vm.uuid)
        shown, tags = {r.name for r in known.values()}, set(known)
        name = name or default_name(shown | tags)
        params = {
            "name": name,
            "libvirt_name": libvirt_name_for(name, tags),
            "description": description,
            "vm_state": vm.state,
            "memory_mib": vm.memory_mib,
        }
        return runner.submit(
            "snapshot.create", vm, actor=actor, snapshot=name, params=params, target_uri=snapshot_uri(vm.name, name)
        )


def _run_create(op: Operation, progress: runner.Progress) -> str:
    runner.recheck(op, "snapshot_create")
    name, libvirt_name = op.params["name"], op.params["libvirt_name"]
    if op.params.get("vm_state") not in ("shutoff", "crashed"):
        what = "Saving memory and disks (the guest is paused meanwhile)"
    else:
        what = "Saving the disks"
    estimate = runner.estimate_seconds("snapshot.create", op.vm_uuid, vm_state=op.params.get("vm_state"))
    try:
        with progress.phase(what, estimate):
            info = hypervisor.create_snapshot(op.vm_uuid, libvirt_name, op.params.get("description", ""))
    except Conflict:
        # The request checked the names the app knew: this one was made outside the app since.
        raise Conflict(
            f"VM {op.vm_name} already has a snapshot named {libvirt_name!r}, made outside the app: "
            "nothing was taken. Choose another name."
        ) from None
    _record_created(op, info, name)
    kind = "with memory" if info.memory else "of the disks"
    return f"Snapshot {name} taken ({kind})."


def _record_created(op: Operation, info: hypervisor.SnapshotInfo, name: str) -> SnapshotRecord:
    known = records.live(op.vm_uuid)
    if info.name in known:
        return known[info.name]  # recorded already (a settled task)
    if info.parent and info.parent not in known:
        # Its parent was made outside the app and never seen: record what the app has
        # not seen first (this worker holds the VM's one operation: it may write).
        names, _ = hypervisor.snapshot_names(op.vm_uuid, current="")
        reconcile(policy.VMRef(op.vm_name, op.vm_uuid), known, [n for n in names if n not in known and n != info.name], [])
        known = records.live(op.vm_uuid)
    with transaction.atomic():
        return records.add(
            op.vm_uuid,
            op.vm_name,
            info,
            name=name,
            parent=known.get(info.parent),
            created_by=op.user,
            created_by_username=op.username,
        )


def _settle_create(op: Operation) -> tuple[bool, str] | None:
    vm = hypervisor.get_vm(op.vm_uuid)
    if vm.busy_with_snapshot:
        return None  # QEMU is still writing it; libvirt finishes the job without our worker
    names, _ = hypervisor.snapshot_names(vm.uuid, current=vm.current_snapshot)
    if op.params["libvirt_name"] in names:
        _record_created(op, hypervisor.get_snapshot(vm.uuid, op.params["libvirt_name"]), op.params["name"])
        outcome = True, f"libvirt shows snapshot {op.params['name']}: it was taken."
    else:
        outcome = False, f"libvirt shows no snapshot {op.params['name']}: it was not taken."
    return outcome[0], outcome[1] + _resume_if_left_paused(vm, op)


def _resume_if_left_paused(vm: hypervisor.VMInfo, op: Operation) -> str:
    """A save cut off by a libvirtd crash leaves the guest paused ("saving") with no job
    behind it: give the running VM back, as it was before the request. libvirtd coming
    back may also have stopped the guest (it does when QEMU answers the old daemon's
    save on the new monitor connection): say so, as a guest's memory cannot be brought back."""
    if op.params.get("vm_state") == "running" and vm.state == "shutoff":
        return (
            f" VM {vm.name} was running before and is shut off now: libvirtd stopped it when it came back "
            "(its memory is lost; its disks are as they were). Start it again."
        )
    if op.params.get("vm_state") != "running" or vm.state != "paused" or vm.state_reason_text != "saving":
        return ""
    try:
        hypervisor.power(vm.uuid, "resume")
    except AppError as exc:
        return f" The VM was left paused by the interrupted save and could not be resumed: {exc.message}"
    return " The VM had been left paused by the interrupted save: it was resumed."


runner.register("snapshot.create", label="take snapshot", settle=_settle_create)(_run_create)


# ---------------------------------------------------------------------------
# Update (rename, description): the name shown lives in the DB, see DESIGN.md


def request_update(
    actor: Actor, vm_name: str, snap_name: str, *, name: str | None = None, description: str | None = None
) -> tuple[Tree, SnapshotRecord]:
    params = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
    with attempt("snapshot.update", actor, vm_name, snap_name, params):
        vm = policy.get_vm(actor.user, vm_name, "snapshot_edit")
        tree = load_tree(vm)
        record = tree.get(snap_name)
        if name is not None:
            SNAPSHOT_NAME.validate(name)
            if name != record.name and name in tree.by_name:
                raise _name_taken(vm, name)
        if description is not None:
            validate_description(description)
        with transaction.atomic():
            busy = runner.busy_conflict(vm)
            if busy is not None:
                raise busy
            changes = []
            if name is not None and name != record.name:
                changes.append(f"renamed {record.name} → {name}")
                record.name = name
            if description is not None and description != record.description:
                changes.append("description changed")
                record.description = description
            record.save(update_fields=["name", "description"])
            audit.record(
                "snapshot.update",
                actor=actor,
                vm=vm,
                snapshot=record.name,
                params={**params, "old_name": snap_name},
                stage=AuditEvent.Stage.RESULT,
                message=(f"Snapshot {snap_name}: " + ", ".join(changes)) if changes else f"Snapshot {snap_name}: nothing changed",
            )
        return tree, record


# ---------------------------------------------------------------------------
# Revert


def request_revert(actor: Actor, vm_name: str, snap_name: str) -> Operation:
    with attempt("snapshot.revert", actor, vm_name, snap_name):
        vm = policy.get_vm(actor.user, vm_name, "snapshot_revert")
        _check_snapshottable(vm)
        tree = load_tree(vm)
        record = tree.get(snap_name)
        params = {
            "libvirt_name": record.libvirt_name,
            "record": record.pk,
            "snapshot_state": record.state,
            "vm_state": vm.state,
            "was_current": tree.current is not None and tree.current.pk == record.pk,
        }
        return runner.submit(
            "snapshot.revert", vm, actor=actor, snapshot=record.name, params=params, target_uri=f"/api/vms/{quote(vm.name)}"
        )


def _run_revert(op: Operation, progress: runner.Progress) -> str:
    vm = runner.task_vm(op, "snapshot_revert", snapshots=False)
    libvirt_name = op.params["libvirt_name"]
    try:
        hypervisor.get_snapshot(vm.uuid, libvirt_name)
    except NotFound:
        raise NotFound(
            f"Snapshot {op.snapshot} no longer exists in libvirt (deleted outside the app?): nothing was changed."
        ) from None
    what = "Restoring memory and disks" if op.params.get("snapshot_state") == "running" else "Restoring the disks"
    estimate = runner.estimate_seconds("snapshot.revert", vm.uuid, snapshot_state=op.params.get("snapshot_state"))
    with progress.phase(what, estimate):
        hypervisor.revert_snapshot(vm.uuid, libvirt_name)
    state = hypervisor.vm_state(vm.uuid)
    return f"Reverted {vm.name} to snapshot {op.snapshot}; the VM is {state}."


def _settle_revert(op: Operation) -> tuple[bool, str] | None:
    if hypervisor.get_vm(op.vm_uuid).busy_with_snapshot:
        return None  # QEMU is still loading the snapshot
    _, current = hypervisor.snapshot_names(op.vm_uuid)
    if current != op.params["libvirt_name"]:
        return False, f"libvirt does not show {op.snapshot} as current: the revert did not complete."
    if op.params.get("was_current", True):
        return False, (
            f"libvirt shows {op.snapshot} as current, as it was before the request: "
            "the revert may or may not have happened; check the VM."
        )
    return True, f"libvirt shows {op.snapshot} as current (it was not before): the revert took effect."


runner.register("snapshot.revert", label="revert to snapshot", settle=_settle_revert)(_run_revert)


# ---------------------------------------------------------------------------
# Delete


DELETE_MODES = ("node", "all")


def request_delete(actor: Actor, vm_name: str, snap_name: str, mode: str = "node") -> Operation:
    with attempt("snapshot.delete", actor, vm_name, snap_name, {"mode": mode}):
        if mode not in DELETE_MODES:
            raise Invalid(
                f"Unknown delete mode {mode!r}: use 'node' (this snapshot only, children move up) "
                "or 'all' (with its descendants)."
            )
        vm = policy.get_vm(actor.user, vm_name, "snapshot_delete")
        tree = load_tree(vm)
        record = tree.get(snap_name)
        doomed = (tree.descendants(record) if mode == "all" else []) + [record]
        params = {
            "mode": mode,
            "targets": [{"record": r.pk, "libvirt_name": r.libvirt_name, "name": r.name} for r in doomed],
        }
        return runner.submit(
            "snapshot.delete",
            vm,
            actor=actor,
            snapshot=record.name,
            params=params,
            target_uri=f"/api/vms/{quote(vm.name)}/snapshots",
        )


def _run_delete(op: Operation, progress: runner.Progress) -> str:
    runner.recheck(op, "snapshot_delete")
    targets = op.params["targets"]
    names, _ = hypervisor.snapshot_names(op.vm_uuid, current="")
    present = set(names)
    for i, target in enumerate(targets):
        progress(int(100 * i / len(targets)), f"Deleting snapshot {target['name']} ({i + 1} of {len(targets)})")
        if target["libvirt_name"] in present:
            hypervisor.delete_snapshot(op.vm_uuid, target["libvirt_name"])
        records.mark_deleted(target["record"], op.username)
    if len(targets) == 1:
        return f"Snapshot {op.snapshot} deleted."
    return f"Snapshot {op.snapshot} and its {len(targets) - 1} descendants deleted."


def _settle_delete(op: Operation) -> tuple[bool, str]:
    names, _ = hypervisor.snapshot_names(op.vm_uuid, current="")
    left = [t for t in op.params["targets"] if t["libvirt_name"] in names]
    for t in op.params["targets"]:
        if t["libvirt_name"] not in names:
            records.mark_deleted(t["record"], op.username)
    if not left:
        return True, "libvirt shows every snapshot to delete gone."
    return False, "Still present: " + ", ".join(t["name"] for t in left) + "."


runner.register("snapshot.delete", label="delete snapshot", settle=_settle_delete)(_run_delete)
