"""Every snapshot action, one function each, shared by the HTML views, the API and
the django-q2 tasks.

``request_*`` functions run in the web request: permission, validation, then they
queue an Operation (or, for a rename, make the change). ``_run_*`` functions run on
a worker and re-check libvirt before acting, so a redelivered task never acts twice.
Every attempt — allowed, denied or failed — leaves an audit row.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

from django.db import transaction
from django.utils import timezone

from operations import audit, runner
from operations.audit import Actor
from operations.models import AuditEvent, Operation
from snapshots.models import SnapshotRecord
from vms import access, hypervisor
from vms.errors import AppError, Conflict, Invalid, NotFound

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, not only digits, and not 'current'"
MAX_DESCRIPTION = 1000
OUTSIDE = "(outside the app)"


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name.isdigit() or name.lower() == "current":
        raise Invalid(f"Invalid snapshot name {name!r}: use {NAME_RULE}.", field="name")
    return name


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


# ---------------------------------------------------------------------------
# Reading: libvirt says what exists, the DB remembers names, parents and history


@dataclass
class Tree:
    vm: hypervisor.VMInfo
    records: list[SnapshotRecord]  # live snapshots, oldest first
    current: SnapshotRecord | None
    libvirt_names: frozenset[str] = frozenset()  # every name libvirt lists now
    children: dict[int | None, list[SnapshotRecord]] = field(default_factory=dict)

    def __post_init__(self):
        children = defaultdict(list)
        for record in self.records:
            children[record.parent_id].append(record)
        self.children = dict(children)
        for record in self.records:
            record.kids = self.children.get(record.pk, [])
        self.by_name = {r.name: r for r in self.records}
        self.by_id = {r.pk: r for r in self.records}

    @property
    def roots(self) -> list[SnapshotRecord]:
        return self.children.get(None, [])

    def get(self, name: str) -> SnapshotRecord:
        try:
            return self.by_name[name]
        except KeyError:
            raise NotFound(f"VM {self.vm.name} has no snapshot named {name!r}.") from None

    def descendants(self, record: SnapshotRecord) -> list[SnapshotRecord]:
        """Every descendant of ``record``, leaves before their parents."""
        ordered: list[SnapshotRecord] = []

        def walk(node):
            for child in self.children.get(node.pk, []):
                walk(child)
                ordered.append(child)

        walk(record)
        return ordered

    def parent_name(self, record: SnapshotRecord) -> str:
        parent = self.by_id.get(record.parent_id)
        return parent.name if parent else ""


def _created(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def load_tree(vm: hypervisor.VMInfo) -> Tree:
    """The VM's snapshot tree in two libvirt calls plus one per snapshot not seen before.

    Snapshots made outside the app are recorded (and audited) as found; ones that
    vanished are marked deleted, and their children re-read for their new parent.
    While an operation runs on the VM its worker owns the records: nothing is written.
    """
    names, current_name = hypervisor.snapshot_names(vm.uuid)
    live = {r.libvirt_name: r for r in SnapshotRecord.objects.filter(vm_uuid=vm.uuid, deleted_at__isnull=True)}
    present = set(names)
    new = [n for n in names if n not in live]
    gone = [r for n, r in live.items() if n not in present]
    if (new or gone) and not Operation.objects.filter(vm_uuid=vm.uuid, status__in=Operation.ACTIVE).exists():
        _reconcile(vm, live, new, gone)
        live = {r.libvirt_name: r for r in SnapshotRecord.objects.filter(vm_uuid=vm.uuid, deleted_at__isnull=True)}
    records = sorted((r for n, r in live.items() if n in present), key=lambda r: (r.created, r.pk))
    # A record whose parent vanished meanwhile is shown as a root until reconciled.
    ids = {r.pk for r in records}
    for r in records:
        if r.parent_id not in ids:
            r.parent_id = None
    current = live.get(current_name) if current_name in present else None
    return Tree(vm=vm, records=records, current=current, libvirt_names=frozenset(present))


def _reconcile(vm, live: dict[str, SnapshotRecord], new: list[str], gone: list[SnapshotRecord]) -> None:
    gone_ids = {r.pk for r in gone}
    orphans = [r for r in live.values() if r.parent_id in gone_ids and r.pk not in gone_ids]
    infos = {i.name: i for i in hypervisor.get_snapshots(vm.uuid, new + [r.libvirt_name for r in orphans])}
    now = timezone.now()
    with transaction.atomic():
        for record in gone:
            SnapshotRecord.objects.filter(pk=record.pk).update(deleted_at=now, deleted_by_username=OUTSIDE)
            audit.record(
                "snapshot.lost",
                actor=None,
                vm=vm,
                snapshot=record.name,
                stage=AuditEvent.Stage.EVENT,
                message=f"Snapshot {record.name} was deleted outside the app.",
            )
            live.pop(record.libvirt_name, None)
        for info in _parents_first([infos[n] for n in new if n in infos]):
            name = info.name
            display = (
                name
                if not SnapshotRecord.objects.filter(vm_uuid=vm.uuid, name=name, deleted_at__isnull=True).exists()
                else f"{name}-found"
            )
            live[name] = SnapshotRecord.objects.create(
                vm_uuid=vm.uuid,
                vm_name=vm.name,
                libvirt_name=name,
                name=display,
                description=info.description,
                state=info.state,
                memory=info.memory,
                created=_created(info.created),
                origin=SnapshotRecord.Origin.OUTSIDE,
                created_by_username=OUTSIDE,
            )
            audit.record(
                "snapshot.found",
                actor=None,
                vm=vm,
                snapshot=display,
                stage=AuditEvent.Stage.EVENT,
                message=f"Snapshot {display} was made outside the app ({info.state}).",
            )
        for name, info in infos.items():
            record = live.get(name)
            if record is not None:
                parent = live.get(info.parent)
                SnapshotRecord.objects.filter(pk=record.pk).update(parent=parent)


def _parents_first(infos: list[hypervisor.SnapshotInfo]) -> list[hypervisor.SnapshotInfo]:
    """Oldest first; a parent before its children when both were taken in the same second."""
    by_name = {i.name: i for i in infos}

    def depth(info):
        d = 0
        while info.parent in by_name and d < len(by_name):
            info, d = by_name[info.parent], d + 1
        return d

    return sorted(infos, key=lambda i: (i.created, depth(i)))


def get_snapshot(user, vm_name: str, snap_name: str) -> tuple[Tree, SnapshotRecord]:
    vm = access.get_vm(user, vm_name)
    tree = load_tree(vm)
    return tree, tree.get(snap_name)


def as_dict(tree: Tree, record: SnapshotRecord) -> dict:
    return {
        "name": record.name,
        "description": record.description,
        "state": record.state,
        "created": record.created_epoch,
        "parent": tree.parent_name(record),
        "current": tree.current is not None and tree.current.pk == record.pk,
    }


# ---------------------------------------------------------------------------
# Attempts: every mutating request is audited, whatever its outcome


class attempt:
    """Audit a failed or denied request: ``with attempt("snapshot.create", actor, vm_name):``."""

    def __init__(self, action: str, actor: Actor, vm_name: str, snapshot: str = "", params: dict | None = None):
        self.action, self.actor, self.vm_name, self.snapshot, self.params = action, actor, vm_name, snapshot, params

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if isinstance(exc, AppError):
            denied = exc.status in (403, 404)
            audit.record(
                self.action,
                actor=self.actor,
                vm_name=self.vm_name,
                snapshot=self.snapshot,
                params=self.params,
                outcome=AuditEvent.Outcome.DENIED if denied else AuditEvent.Outcome.FAILED,
                message=exc.message,
            )
        return False


def _check_snapshottable(vm: hypervisor.VMInfo) -> None:
    blockers = hypervisor.snapshot_blockers(vm)
    if blockers:
        raise Invalid(" ".join(blockers))


def default_name(tree: Tree, now: datetime | None = None) -> str:
    base = f"snapshot-{(now or timezone.now()).astimezone(UTC):%Y%m%d-%H%M%S}"
    taken = set(tree.by_name) | tree.libvirt_names
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def _libvirt_name_for(tree: Tree, name: str) -> str:
    """The qcow2 tag for a new snapshot: its name, unless a renamed snapshot still holds that tag."""
    if name not in tree.libvirt_names:
        return name
    n = 2
    while f"{name}.{n}" in tree.libvirt_names:
        n += 1
    return f"{name}.{n}"


# ---------------------------------------------------------------------------
# Create


def request_create(actor: Actor, vm_name: str, name: str | None = None, description: str = "") -> Operation:
    with attempt("snapshot.create", actor, vm_name, name or "", {"description": description} if description else None):
        vm = access.get_vm(actor.user, vm_name, "snapshot_create")
        _check_snapshottable(vm)
        description = validate_description(description or "")
        tree = load_tree(vm)
        if name:
            validate_name(name)
            if name in tree.by_name:
                raise Conflict(f"VM {vm.name} already has a snapshot named {name!r}: choose another name.", field="name")
        else:
            name = default_name(tree)
        params = {
            "name": name,
            "libvirt_name": _libvirt_name_for(tree, name),
            "description": description,
            "vm_state": vm.state,
            "memory_mib": vm.memory_mib,
        }
        return runner.submit(
            "snapshot.create", vm, actor=actor, snapshot=name, params=params, target_uri=snapshot_uri(vm.name, name)
        )


def _vm_for_task(op: Operation, perm: str) -> hypervisor.VMInfo:
    """The VM of a running task, with the requester's permission checked again."""
    vm = hypervisor.get_vm(op.vm_uuid)
    if op.user is None or not op.user.is_active:
        raise AppError("The user who asked for this task no longer exists or is disabled.")
    access.forget(op.user)
    access.check(op.user, perm, vm)
    return vm


def _run_create(op: Operation, progress: runner.Progress) -> str:
    vm = _vm_for_task(op, "snapshot_create")
    name, libvirt_name = op.params["name"], op.params["libvirt_name"]
    names, _ = hypervisor.snapshot_names(vm.uuid)
    if libvirt_name in names:
        info = hypervisor.get_snapshot(vm.uuid, libvirt_name)
    else:
        _check_snapshottable(vm)
        if vm.is_active:
            what = "Saving memory and disks (the guest is paused meanwhile)"
        else:
            what = "Saving the disks"
        estimate = runner.estimate_seconds("snapshot.create", vm.uuid, vm_state=op.params.get("vm_state"))
        with progress.phase(what, estimate):
            info = hypervisor.create_snapshot(vm.uuid, libvirt_name, op.params.get("description", ""))
    _record_created(vm, op, info, name)
    kind = "with memory" if info.memory else "of the disks"
    return f"Snapshot {name} taken ({kind})."


def _record_created(vm, op: Operation, info: hypervisor.SnapshotInfo, name: str) -> SnapshotRecord:
    with transaction.atomic():
        existing = SnapshotRecord.objects.filter(vm_uuid=vm.uuid, libvirt_name=info.name, deleted_at__isnull=True).first()
        if existing:
            return existing
        parent = (
            SnapshotRecord.objects.filter(vm_uuid=vm.uuid, libvirt_name=info.parent, deleted_at__isnull=True).first()
            if info.parent
            else None
        )
        return SnapshotRecord.objects.create(
            vm_uuid=vm.uuid,
            vm_name=vm.name,
            libvirt_name=info.name,
            name=name,
            description=info.description,
            state=info.state,
            memory=info.memory,
            created=_created(info.created),
            parent=parent,
            created_by=op.user,
            created_by_username=op.username,
        )


def _settle_create(op: Operation) -> tuple[bool, str] | None:
    vm = hypervisor.get_vm(op.vm_uuid)
    if vm.busy_with_snapshot:
        return None  # QEMU is still writing it; libvirt finishes the job without our worker
    names, _ = hypervisor.snapshot_names(vm.uuid)
    if op.params["libvirt_name"] in names:
        _record_created(vm, op, hypervisor.get_snapshot(vm.uuid, op.params["libvirt_name"]), op.params["name"])
        outcome = True, f"libvirt shows snapshot {op.params['name']}: it was taken."
    else:
        outcome = False, f"libvirt shows no snapshot {op.params['name']}: it was not taken."
    return outcome[0], outcome[1] + _resume_if_left_paused(vm, op)


def _resume_if_left_paused(vm: hypervisor.VMInfo, op: Operation) -> str:
    """A save cut off by a libvirtd crash leaves the guest paused ("saving") with no job
    behind it: give the running VM back, as it was before the request."""
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
        vm = access.get_vm(actor.user, vm_name, "snapshot_edit")
        tree = load_tree(vm)
        record = tree.get(snap_name)
        if name is not None:
            validate_name(name)
            if name != record.name and name in tree.by_name:
                raise Conflict(f"VM {vm.name} already has a snapshot named {name!r}: choose another name.", field="name")
        if description is not None:
            validate_description(description)
        with transaction.atomic():
            busy = Operation.objects.filter(vm_uuid=vm.uuid, status__in=Operation.ACTIVE).first()
            if busy is not None:
                raise Conflict(f"Another operation is running on {vm.name}: {runner.describe(busy)}. Wait for it to end.")
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
        vm = access.get_vm(actor.user, vm_name, "snapshot_revert")
        _check_snapshottable(vm)
        tree = load_tree(vm)
        record = tree.get(snap_name)
        params = {"libvirt_name": record.libvirt_name, "record": record.pk, "snapshot_state": record.state, "vm_state": vm.state}
        return runner.submit(
            "snapshot.revert", vm, actor=actor, snapshot=record.name, params=params, target_uri=f"/api/vms/{quote(vm.name)}"
        )


def _run_revert(op: Operation, progress: runner.Progress) -> str:
    vm = _vm_for_task(op, "snapshot_revert")
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
    if current == op.params["libvirt_name"]:
        return True, f"libvirt shows {op.snapshot} as current: the revert most likely completed; check the VM."
    return False, f"libvirt does not show {op.snapshot} as current: the revert did not complete."


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
        vm = access.get_vm(actor.user, vm_name, "snapshot_delete")
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
    vm = _vm_for_task(op, "snapshot_delete")
    targets = op.params["targets"]
    names, _ = hypervisor.snapshot_names(vm.uuid)
    present = set(names)
    for i, target in enumerate(targets):
        progress(int(100 * i / len(targets)), f"Deleting snapshot {target['name']} ({i + 1} of {len(targets)})")
        if target["libvirt_name"] in present:
            hypervisor.delete_snapshot(vm.uuid, target["libvirt_name"])
        mark_deleted(target["record"], op.username)
    if len(targets) == 1:
        return f"Snapshot {op.snapshot} deleted."
    return f"Snapshot {op.snapshot} and its {len(targets) - 1} descendants deleted."


def mark_deleted(record_id: int, username: str) -> None:
    """Record a snapshot's deletion; its children move up to its parent (as in libvirt)."""
    with transaction.atomic():
        record = SnapshotRecord.objects.filter(pk=record_id, deleted_at__isnull=True).first()
        if record is None:
            return
        SnapshotRecord.objects.filter(parent=record, deleted_at__isnull=True).update(parent=record.parent_id)
        record.deleted_at = timezone.now()
        record.deleted_by_username = username
        record.save(update_fields=["deleted_at", "deleted_by_username"])


def _settle_delete(op: Operation) -> tuple[bool, str]:
    names, _ = hypervisor.snapshot_names(op.vm_uuid)
    left = [t for t in op.params["targets"] if t["libvirt_name"] in names]
    for t in op.params["targets"]:
        if t["libvirt_name"] not in names:
            mark_deleted(t["record"], op.username)
    if not left:
        return True, "libvirt shows every snapshot to delete gone."
    return False, "Still present: " + ", ".join(t["name"] for t in left) + "."


runner.register("snapshot.delete", label="delete snapshot", settle=_settle_delete)(_run_delete)
