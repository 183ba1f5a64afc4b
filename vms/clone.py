"""Cloning a shut-off VM with its snapshots: the qcow2 files are copied byte for byte
(internal snapshots live inside them; ``qemu-img convert`` and ``virt-clone`` drop
them), the clone is defined with a new name, UUID, MACs and paths, and every
snapshot is redefined on it, parents first, its saved definitions rewritten."""

from __future__ import annotations

import errno
import os
import time
import uuid as uuidlib
from pathlib import Path

from django.db import transaction
from django.db.models import Q

from access import policy
from access.models import Grant
from core import hypervisor, storage
from core.errors import AppError, Conflict, Failed, Invalid
from core.names import VM_NAME
from operations import audit, runner
from operations.audit import Actor, attempt
from operations.models import AuditEvent, Operation
from snapshots import records
from snapshots.models import SnapshotRecord
from snapshots.tree import load_tree
from vms import grants
from vms.power import vm_uri


def clone_files(vm: hypervisor.VMInfo, xml: str, name: str) -> dict[str, str]:
    """{source file: the clone's copy} for every writable disk (and the NVRAM file).

    Copies sit next to their source and are named after the clone: ``<clone>.qcow2``,
    or ``<clone>-<target>.qcow2`` when the VM has several disks to copy.
    """
    disks = [d for d in hypervisor.disks_of(xml) if d.writable]
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
        vm = policy.get_vm(actor.user, vm_name, "clone")
        if name:
            VM_NAME.validate(name)
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
    source = runner.task_vm(op, "clone")
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
        sizes = {path: storage.data_size(path) for path in files}
        copy = _CopyProgress(progress, sum(sizes.values()), 0, 90)
        for path, dest in files.items():
            copy.what = f"{Path(path).name} → {Path(dest).name}"
            copy.report()
            storage.copy_sparse(path, dest, copy, created)
        step = "defining the clone"
        progress(91, f"Defining {name}")
        clone = hypervisor.define_vm(hypervisor.clone_domain_xml(xml, identity))
        defined = True
        ordered = hypervisor.parents_first(snapshots)
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
    originals = records.live(op.vm_uuid)
    made: dict[str, SnapshotRecord] = {}
    shown: set[str] = set()
    for info in hypervisor.parents_first(snapshots):
        original = originals.get(info.name)
        display = original.name if original else info.name
        if display in shown:
            display = f"{display}-{info.name}"
        shown.add(display)
        made[info.name] = records.add(
            clone.uuid,
            clone.name,
            info,
            name=display,
            origin=SnapshotRecord.Origin.CLONE,
            parent=made.get(info.parent),
            description=original.description if original else None,
            created=original.created if original else None,
            created_by=original.created_by if original else None,
            created_by_username=original.created_by_username if original else records.OUTSIDE,
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
        _, new = grants.grant_role(role, user=user, vm=clone.uuid, actor=actor, automatic=True)
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
