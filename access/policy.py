"""Who may do what, decided in one place.

Every HTML view, API view, template check and task asks this module. A VM the
user may not view does not exist for them (404, absent from every list); a
visible VM without the needed permission is 403 with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from django.db.models import Q

from access.models import AUDIT, PERMISSION_NAMES, Grant
from core import hypervisor
from core.errors import AppError, Forbidden, NotFound

PERMISSION_LABELS = {
    "view": "view this VM",
    "power": "start or stop this VM",
    "snapshot_create": "take snapshots of this VM",
    "snapshot_revert": "revert this VM to a snapshot",
    "snapshot_edit": "rename or describe this VM's snapshots",
    "snapshot_delete": "delete this VM's snapshots",
    "clone": "clone this VM",
    "delete": "delete this VM",
}


@dataclass
class Access:
    """The user's permissions, loaded once per request (one query)."""

    is_admin: bool = False
    everywhere: set[str] = field(default_factory=set)
    per_vm: dict[str, set[str]] = field(default_factory=dict)

    def perms(self, vm_uuid: str) -> set[str]:
        if self.is_admin:
            return set(PERMISSION_NAMES)
        return (self.everywhere | self.per_vm.get(vm_uuid, set())) & set(PERMISSION_NAMES)

    def can(self, perm: str, vm_uuid: str) -> bool:
        return perm in self.perms(vm_uuid)

    def can_view(self, vm_uuid: str) -> bool:
        return self.can("view", vm_uuid)

    @property
    def can_audit(self) -> bool:
        """Auditors and admins read every task and audit entry."""
        return self.is_admin or AUDIT in self.everywhere

    @property
    def sees_all_vms(self) -> bool:
        return self.is_admin or "view" in self.everywhere

    def visible_vm_uuids(self) -> set[str] | None:
        """UUIDs of VMs the user may view; None means all of them."""
        if self.sees_all_vms:
            return None
        return {uuid for uuid, perms in self.per_vm.items() if "view" in perms}


def access_for(user) -> Access:
    if not user or not user.is_authenticated or not user.is_active:
        return Access()
    cached = getattr(user, "_virtsnap_access", None)
    if cached is not None:
        return cached
    access = Access(is_admin=user.is_superuser)
    if not access.is_admin:
        grants = Grant.objects.filter(Q(user=user) | Q(group__user=user)).select_related("role").distinct()
        for grant in grants:
            perms = set(grant.role.permissions)
            if grant.vm_uuid:
                access.per_vm.setdefault(grant.vm_uuid, set()).update(perms)
            else:
                access.everywhere.update(perms)
    user._virtsnap_access = access
    return access


def forget(user) -> None:
    """Drop the cached permissions (after a grant changes)."""
    if hasattr(user, "_virtsnap_access"):
        del user._virtsnap_access


class VMRef(NamedTuple):
    """A VM known by name and UUID only (a task's, a grant's), for ``check``."""

    name: str
    uuid: str


def not_found(name: str) -> NotFound:
    return NotFound(f"There is no VM named {name!r} that you can see.")


def check(user, perm: str, vm: hypervisor.VMInfo, *, asked: str | None = None) -> None:
    """Raise NotFound if the user may not view ``vm``, Forbidden if ``perm`` is missing.

    The NotFound names only ``asked`` (what the user sent: a name or a UUID), never the
    VM's real name: a VM you may not see answers exactly like one that does not exist.
    """
    access = access_for(user)
    if not access.can_view(vm.uuid):
        raise not_found(vm.name if asked is None else asked)
    if not access.can(perm, vm.uuid):
        raise Forbidden(f"You may not {PERMISSION_LABELS.get(perm, perm)} ({vm.name}): ask an admin for a role with '{perm}'.")


def get_vm(user, name: str, perm: str = "view", *, snapshots: bool = True) -> hypervisor.VMInfo:
    """The VM named ``name`` if the user may ``perm`` it; the one lookup every view uses.

    ``snapshots=False``: a leaner lookup, without the VM's snapshot count, current
    snapshot and persistence (see ``hypervisor.get_vm``).
    """
    try:
        vm = hypervisor.get_vm(name, snapshots=snapshots)
    except NotFound:
        raise not_found(name) from None
    check(user, perm, vm, asked=name)
    return vm


def recheck(user, vm, perm: str) -> None:
    """A worker about to act for ``user``: is that still allowed? (Grants may have been
    revoked, the account disabled, since the request.) ``vm`` needs ``name`` and ``uuid``."""
    if user is None or not user.is_active:
        raise AppError("The user who asked for this task no longer exists or is disabled.")
    forget(user)
    check(user, perm, vm)


def require_audit(user) -> None:
    """Admins and auditors read every task and audit entry; anyone else gets 403."""
    if not access_for(user).can_audit:
        raise Forbidden("Only auditors and admins may read the audit trail: ask an admin for the auditor role.")


def require_admin(user) -> None:
    """Grants, roles, users and groups are managed by admins (Django superusers) only."""
    if not access_for(user).is_admin:
        raise Forbidden("Only admins may change grants and roles.")


def visible_vms(user) -> list[hypervisor.VMInfo]:
    access = access_for(user)
    vms = hypervisor.list_vms()
    allowed = access.visible_vm_uuids()
    if allowed is None:
        return vms
    return [vm for vm in vms if vm.uuid in allowed]


def restrict_by_vm(user, queryset, field: str = "vm_uuid"):
    """Filter a queryset of rows that carry a VM UUID to the VMs the user may view."""
    access = access_for(user)
    allowed = access.visible_vm_uuids()
    if allowed is None:
        return queryset
    return queryset.filter(**{f"{field}__in": allowed})
