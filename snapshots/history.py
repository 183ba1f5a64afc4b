"""A VM's snapshot history: the life of every snapshot it ever had, as a timeline.

Built from two sources, in a fixed number of queries whatever the VM's age:
the audit trail (what was done, by whom, when: the task results of snapshot actions,
and the snapshots found or lost outside the app) and ``SnapshotRecord`` (what each
snapshot was: its state, who took it, when it was deleted). A record whose creation
or deletion left no audit row of its own (a snapshot copied by a clone, one deleted
with its VM) still gets its line, from the record.

A VM gone from libvirt keeps its history: it is found by name through those rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Q

from access import policy
from core import hypervisor
from core.errors import NotFound
from operations.models import AuditEvent
from snapshots.models import SnapshotRecord
from snapshots.records import OUTSIDE
from snapshots.tree import load_tree

RESULT = AuditEvent.Stage.RESULT
EVENT = AuditEvent.Stage.EVENT
SUCCESS = AuditEvent.Outcome.SUCCESS
# Task results that belong on the VM's timeline besides the snapshot actions.
VM_RESULTS = ("vm.clone", "vm.delete")
# Events (not tasks) that belong there: snapshots found or lost outside the app, a clone's birth.
VM_EVENTS = ("snapshot.found", "snapshot.lost", "vm.clone")
# A snapshot's libvirt creation time is in whole seconds and precedes the task's end.
SLACK = timedelta(seconds=5)


@dataclass
class Entry:
    """One line of the timeline."""

    time: datetime
    event: str  # created, create-failed, renamed, edited, reverted, deleted, found, lost, copied, cloned, vm-deleted, ...
    snapshot: str
    user: str
    outcome: str
    summary: str
    message: str = ""
    details: dict = field(default_factory=dict)
    task: int | None = None
    audit_id: int | None = None

    def as_dict(self) -> dict:
        return {
            "time": self.time.isoformat(),
            "event": self.event,
            "snapshot": self.snapshot,
            "user": self.user,
            "outcome": self.outcome,
            "summary": self.summary,
            "message": self.message,
            "details": self.details,
            "task": self.task,
            "audit_id": self.audit_id,
        }


@dataclass
class Life:
    """One snapshot the VM had or has."""

    record: SnapshotRecord
    former_names: list[str] = field(default_factory=list)
    vm_gone: bool = False  # the VM is gone from libvirt, and its snapshots with it

    @property
    def exists(self) -> bool:
        return self.record.deleted_at is None and not self.vm_gone

    @property
    def first_name(self) -> str:
        return self.former_names[0] if self.former_names else self.record.name

    def as_dict(self) -> dict:
        r = self.record
        return {
            "name": r.name,
            "former_names": self.former_names,
            "libvirt_name": r.libvirt_name,
            "description": r.description,
            "state": r.state,
            "memory": r.memory,
            "created": r.created_epoch,
            "created_by": r.created_by_username,
            "origin": r.origin,
            "exists": self.exists,
            "deleted": int(r.deleted_at.timestamp()) if r.deleted_at else None,
            "deleted_by": r.deleted_by_username,
        }


@dataclass
class History:
    vm_name: str
    vm_uuid: str
    vm: hypervisor.VMInfo | None  # None: the VM is gone from libvirt
    entries: list[Entry]  # newest first
    snapshots: list[Life]  # oldest first

    def as_dict(self) -> dict:
        return {
            "vm": {"name": self.vm_name, "uuid": self.vm_uuid, "exists": self.vm is not None},
            "snapshots": [life.as_dict() for life in self.snapshots],
            "events": [entry.as_dict() for entry in self.entries],
        }


# ---------------------------------------------------------------------------
# Which VM


def locate(user, name: str) -> tuple[str, str, hypervisor.VMInfo | None]:
    """(name, uuid, VMInfo or None) of the VM whose history ``user`` asks for.

    A VM in libvirt is looked up as everywhere else (404 when it is not visible); a
    VM gone from libvirt is found by the name (or UUID) its rows recorded, newest
    first, among those the user may view.
    """
    try:
        vm = policy.get_vm(user, name)
        return vm.name, vm.uuid, vm
    except NotFound:
        if "\x00" in name or hypervisor.vm_exists(name):
            raise  # no VM name holds a NUL (and PostgreSQL refuses one in a query)
    rows = SnapshotRecord.objects.filter(Q(vm_name=name) | Q(vm_uuid=name)).order_by("-id").values_list("vm_uuid", flat=True)
    events = (
        AuditEvent.objects.filter(Q(vm_name=name) | Q(vm_uuid=name))
        .exclude(vm_uuid="")
        .order_by("-id")
        .values_list("vm_uuid", flat=True)
    )
    you = policy.access_for(user)
    for uuid in dict.fromkeys([*events[:50], *rows[:50]]):
        if not you.can_view(uuid):
            continue
        try:
            vm = hypervisor.get_vm(uuid)  # renamed in libvirt since: the same VM
        except NotFound:
            return name, uuid, None
        return vm.name, vm.uuid, vm
    raise policy.not_found(name)


def vm_history(user, name: str) -> History:
    vm_name, vm_uuid, vm = locate(user, name)
    if vm is not None:
        load_tree(vm)  # records what changed outside the app since anyone last looked
    return build(vm_name, vm_uuid, vm)


# ---------------------------------------------------------------------------
# Building the timeline


def build(vm_name: str, vm_uuid: str, vm: hypervisor.VMInfo | None = None) -> History:
    rows = list(
        AuditEvent.objects.filter(vm_uuid=vm_uuid)
        .filter(
            Q(stage=RESULT, action__startswith="snapshot.")
            | Q(stage=RESULT, action__in=VM_RESULTS)
            | Q(stage=EVENT, action__in=VM_EVENTS)
        )
        .order_by("time", "id")
    )
    records = list(SnapshotRecord.objects.filter(vm_uuid=vm_uuid).order_by("created", "id"))
    lives = [Life(r, vm_gone=vm is None) for r in records]
    by_pk = {life.record.pk: life for life in lives}
    _trace_names(lives, [row for row in rows if row.action == "snapshot.update" and row.outcome == SUCCESS])

    entries: list[Entry] = []
    created_rows: dict[str, list[datetime]] = defaultdict(list)  # libvirt name -> times of successful creates
    found_rows: dict[str, int] = defaultdict(int)  # first name -> how many found events
    deleted_pks: set[int] = set()
    vm_deleted: list[AuditEvent] = []
    for row in rows:
        entry = _entry(row, by_pk)
        if entry is not None:
            entries.append(entry)
        if row.outcome != SUCCESS:
            continue
        if row.action == "snapshot.create":
            created_rows[row.params.get("libvirt_name", row.snapshot)].append(row.time)
        elif row.action == "snapshot.found":
            found_rows[row.snapshot] += 1
        elif row.action == "snapshot.delete":
            deleted_pks.update(t.get("record") for t in row.params.get("targets", []))
        elif row.action == "vm.delete" and row.stage == RESULT:
            vm_deleted.append(row)

    for life in lives:
        r = life.record
        if not _creation_covered(life, created_rows, found_rows):
            entries.append(_created_from_record(life))
        if r.deleted_at and r.pk not in deleted_pks and r.deleted_by_username != OUTSIDE:
            entries.append(_deleted_from_record(life, vm_deleted))

    entries.sort(key=lambda e: (e.time, e.audit_id or 0), reverse=True)
    return History(vm_name=vm.name if vm else vm_name, vm_uuid=vm_uuid, vm=vm, entries=entries, snapshots=lives)


def _trace_names(lives: list[Life], renames: list[AuditEvent]) -> None:
    """Each snapshot's former names, walking its renames back from its name now.

    Names are unique among a VM's live snapshots, so a rename to the name a snapshot
    bore at that moment, during its life, was a rename of that snapshot.
    """
    renames = [r for r in renames if r.params.get("name") and r.params.get("name") != r.params.get("old_name")]
    for life in lives:
        r = life.record
        current = r.name
        for row in reversed(renames):
            if row.time < r.created - SLACK or (r.deleted_at and row.time > r.deleted_at):
                continue
            if row.params["name"] == current:
                current = row.params["old_name"]
                life.former_names.insert(0, current)


def _creation_covered(life: Life, created_rows: dict, found_rows: dict) -> bool:
    r = life.record
    if r.origin == SnapshotRecord.Origin.OUTSIDE and found_rows.get(life.first_name):
        found_rows[life.first_name] -= 1
        return True
    if r.origin == SnapshotRecord.Origin.APP:
        end = r.deleted_at or datetime.max.replace(tzinfo=r.created.tzinfo)
        return any(r.created - SLACK <= t <= end for t in created_rows.get(r.libvirt_name, []))
    return False


def _user(row: AuditEvent) -> str:
    return row.username or "(unknown)"


def _entry(row: AuditEvent, by_pk: dict[int, Life]) -> Entry | None:
    ok = row.outcome == SUCCESS
    who = _user(row)
    params = row.params or {}
    base = {
        "time": row.time,
        "snapshot": row.snapshot,
        "user": who,
        "outcome": row.outcome,
        "message": row.message,
        "task": row.operation_id,
        "audit_id": row.id,
    }
    failed = "" if ok else f" — failed: {row.message}"
    action = row.action
    if action == "snapshot.create":
        state = params.get("vm_state", "")
        what = " (with memory)" if state == "running" else " (disks)" if state else ""
        return Entry(
            event="created" if ok else "create-failed",
            summary=f"{who} took snapshot {row.snapshot}{what}" if ok else f"{who} tried to take snapshot {row.snapshot}{failed}",
            details={k: params[k] for k in ("description", "vm_state") if params.get(k)},
            **base,
        )
    if action == "snapshot.update":
        old, new = params.get("old_name", row.snapshot), params.get("name")
        if new and new != old:
            details = {"old_name": old, "new_name": new}
            also = ""
            if "description" in params:
                details["description"] = params["description"]
                also = " and set its description"
            return Entry(event="renamed", summary=f"{who} renamed snapshot {old} → {new}{also}{failed}", details=details, **base)
        return Entry(
            event="edited",
            summary=f"{who} changed the description of snapshot {old}{failed}",
            details={"description": params.get("description", "")},
            **base,
        )
    if action == "snapshot.revert":
        return Entry(
            event="reverted" if ok else "revert-failed",
            summary=f"{who} reverted the VM to snapshot {row.snapshot}{failed}",
            **base,
        )
    if action == "snapshot.delete":
        targets = params.get("targets", [])
        mode = params.get("mode", "node")
        others = [t.get("name", "") for t in targets if t.get("name") != row.snapshot]
        if mode == "all":
            how = (
                f" with its {len(others)} descendant{'s' if len(others) != 1 else ''} ({', '.join(others)})"
                if others
                else " (it had no descendants)"
            )
        else:
            how = " (its children moved up to its parent)"
        return Entry(
            event="deleted" if ok else "delete-failed",
            summary=f"{who} deleted snapshot {row.snapshot}{how}{failed}",
            details={"mode": mode, "with_children": mode == "all", "removed": [t.get("name", "") for t in targets]},
            **base,
        )
    if action == "snapshot.found":
        return Entry(
            event="found", summary=f"Snapshot {row.snapshot} found: it was made outside the app", **{**base, "user": OUTSIDE}
        )
    if action == "snapshot.lost":
        return Entry(
            event="lost", summary=f"Snapshot {row.snapshot} vanished: it was deleted outside the app", **{**base, "user": OUTSIDE}
        )
    if action == "vm.clone" and row.stage == EVENT:
        return Entry(
            event="cloned-from",
            summary=f"{row.message} Requested by {who}.",
            details={"source": params.get("source", "")},
            **base,
        )
    if action == "vm.clone":
        return Entry(
            event="cloned" if ok else "clone-failed",
            summary=f"{who} cloned the VM as {params.get('name', '?')}, with its snapshots{failed}",
            details={"clone": params.get("name", "")},
            **base,
        )
    if action == "vm.delete":
        return Entry(event="vm-deleted" if ok else "vm-delete-failed", summary=f"{who} deleted the VM{failed}", **base)
    if action.startswith("snapshot."):
        return Entry(event=action.removeprefix("snapshot."), summary=f"{who}: {row.message}", **base)
    return None


def _created_from_record(life: Life) -> Entry:
    r = life.record
    what = "with memory" if r.memory else "disks"
    if r.origin == SnapshotRecord.Origin.CLONE:
        return Entry(
            time=r.created,
            event="copied",
            snapshot=life.first_name,
            user=r.created_by_username,
            outcome=SUCCESS,
            summary=f"Snapshot {life.first_name} ({what}) came with the clone; taken by {r.created_by_username or '(unknown)'}",
        )
    outside = r.origin == SnapshotRecord.Origin.OUTSIDE
    who = OUTSIDE if outside else r.created_by_username or "(unknown)"
    return Entry(
        time=r.created,
        event="found" if outside else "created",
        snapshot=life.first_name,
        user=who,
        outcome=SUCCESS,
        summary=f"Snapshot {life.first_name} ({what}) " + ("was made outside the app" if outside else f"taken by {who}"),
    )


def _deleted_from_record(life: Life, vm_deleted: list[AuditEvent]) -> Entry:
    r = life.record
    who = r.deleted_by_username or "(unknown)"
    with_vm = next(
        (row for row in vm_deleted if r.deleted_at <= row.time + SLACK and row.username == r.deleted_by_username), None
    )
    return Entry(
        time=r.deleted_at,
        event="deleted",
        snapshot=r.name,
        user=who,
        outcome=SUCCESS,
        summary=f"{who} deleted snapshot {r.name}" + (" with the VM" if with_vm else ""),
        details={"with_vm": bool(with_vm)},
        task=with_vm.operation_id if with_vm else None,
    )
