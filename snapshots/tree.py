"""A VM's snapshot tree: libvirt says what exists now, the database remembers names,
parents and history. Reading the tree also records what changed outside the app.

Siblings come oldest first; libvirt's creation time has whole seconds, so ties go to
the order the app saw the snapshots (the record's id, a sequence) and, for snapshots
first seen together, to ``hypervisor.creation_order`` — never to libvirt's listing
order, a hash order that changes when libvirtd restarts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import IntegrityError, transaction
from django.db.models import Count, Max
from django.utils import timezone

from access import policy
from core import hypervisor
from core.errors import NotFound
from operations import audit
from operations.models import AuditEvent, Operation
from snapshots import records
from snapshots.models import SnapshotRecord


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
        """Every descendant of ``record``, leaves before their parents (no recursion)."""
        ordered: list[SnapshotRecord] = []
        stack = [(record, False)]
        while stack:
            node, done = stack.pop()
            if done:
                if node is not record:
                    ordered.append(node)
                continue
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(self.children.get(node.pk, [])))
        return ordered

    @property
    def taken(self) -> frozenset[str]:
        """Names a new snapshot cannot have: the names shown and libvirt's names."""
        return frozenset(self.by_name) | self.libvirt_names

    def parent_name(self, record: SnapshotRecord) -> str:
        parent = self.by_id.get(record.parent_id)
        return parent.name if parent else ""


def load_tree(vm: hypervisor.VMInfo) -> Tree:
    """The VM's snapshot tree in two libvirt calls (one more when ``vm`` does not hold its
    current snapshot) plus one per snapshot not seen before.

    Snapshots made outside the app are recorded (and audited) as found; ones that
    vanished are marked deleted, and their children re-read for their new parent.
    While an operation runs on the VM its worker owns the records: nothing is written.
    """
    mark = operations_mark(vm.uuid)  # before libvirt is asked: see reconcile
    names, current_name = hypervisor.snapshot_names(vm.uuid, current=vm.current_snapshot)
    live = records.live(vm.uuid)
    present = set(names)
    new = [n for n in names if n not in live]
    gone = [r for n, r in live.items() if n not in present]
    if (new or gone) and not mark[0]:
        reconcile(vm, live, new, gone, mark=mark)
        live = records.live(vm.uuid)
    ordered = sorted((r for n, r in live.items() if n in present), key=lambda r: (r.created, r.pk))
    # A record whose parent vanished meanwhile is shown as a root until reconciled.
    ids = {r.pk for r in ordered}
    for r in ordered:
        if r.parent_id not in ids:
            r.parent_id = None
    current = live.get(current_name) if current_name in present else None
    return Tree(vm=vm, records=ordered, current=current, libvirt_names=frozenset(present))


def operations_mark(vm_uuid: str) -> tuple:
    """(an operation is active, operations asked for, the last one's id, the last ending)
    on the VM: if it changes while libvirt is read, a worker acted meanwhile."""
    seen = Operation.objects.filter(vm_uuid=vm_uuid).aggregate(n=Count("id"), last=Max("id"), ended=Max("finished_at"))
    active = Operation.objects.active(vm_uuid).exists()
    return active, seen["n"], seen["last"], seen["ended"]


def reconcile(vm, live: dict[str, SnapshotRecord], new: list[str], gone: list[SnapshotRecord], *, mark=None) -> None:
    """Record snapshots ``new`` to the app as found, ``gone`` ones as deleted outside it,
    and re-read the parents of the new ones and of the children of the gone ones.
    ``vm`` needs ``name`` and ``uuid``; ``live`` is ``records.live`` (updated here).

    A reader passes the ``operations_mark`` it took before asking libvirt: if an
    operation started or ended since, what it read may be half a worker's change, and
    nothing is written (the next look reconciles). A worker holding the VM's operation
    passes none. Writes never undo a worker's: a record deleted already stays as it was.
    """
    gone_ids = {r.pk for r in gone}
    orphans = [r for r in live.values() if r.parent_id in gone_ids and r.pk not in gone_ids]
    infos = {i.name: i for i in hypervisor.get_snapshots(vm.uuid, new + [r.libvirt_name for r in orphans])}
    now = timezone.now()
    try:
        with transaction.atomic():
            if mark is not None and operations_mark(vm.uuid) != mark:
                return
            _record_changes(vm, live, new, gone, infos, now)
    except IntegrityError:
        pass  # a worker recorded the same snapshot meanwhile: its record stands


def _record_changes(vm, live, new, gone, infos, now) -> None:
    for record in gone:
        lost = SnapshotRecord.objects.filter(pk=record.pk, deleted_at__isnull=True)
        if not lost.update(deleted_at=now, deleted_by_username=records.OUTSIDE):
            live.pop(record.libvirt_name, None)
            continue
        audit.record(
            "snapshot.lost",
            actor=None,
            vm=vm,
            snapshot=record.name,
            stage=AuditEvent.Stage.EVENT,
            message=f"Snapshot {record.name} was deleted outside the app.",
        )
        live.pop(record.libvirt_name, None)
    shown = {r.name for r in live.values()}
    for info in hypervisor.creation_order(infos[n] for n in new if n in infos):
        display, n = info.name, 1
        while display in shown:  # a name the app already shows: the found one gets another
            display, n = f"{info.name}-found" + (f"-{n}" if n > 1 else ""), n + 1
        shown.add(display)
        live[info.name] = records.add(
            vm.uuid,
            vm.name,
            info,
            name=display,
            origin=SnapshotRecord.Origin.OUTSIDE,
            created_by_username=records.OUTSIDE,
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
            SnapshotRecord.objects.filter(pk=record.pk).update(parent=live.get(info.parent))


def get_snapshot(user, vm_name: str, snap_name: str, perm: str = "view") -> tuple[Tree, SnapshotRecord]:
    """The VM's tree and one of its snapshots, if the user may ``perm`` the VM."""
    tree = load_tree(policy.get_vm(user, vm_name, perm))
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


def default_name(taken: set[str] | frozenset[str], now: datetime | None = None) -> str:
    """``snapshot-<UTC time>``, with a suffix if that is ``taken`` (names shown or libvirt's)."""
    base = f"snapshot-{(now or timezone.now()).astimezone(UTC):%Y%m%d-%H%M%S}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def libvirt_name_for(name: str, taken: set[str] | frozenset[str]) -> str:
    """The qcow2 tag for a new snapshot: its name, unless a renamed snapshot still holds that tag."""
    if name not in taken:
        return name
    n = 2
    while f"{name}.{n}" in taken:
        n += 1
    return f"{name}.{n}"
