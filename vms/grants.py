"""Granting and revoking roles, and defining roles: one path for the management
commands, the grants pages and Django admin, each change audited in its transaction.

A grant gives a role to a user or a group on one VM (kept by UUID, so it follows a
renamed VM) or on all VMs. Roles holding ``audit`` are global: they are granted on
all VMs only. Admins are Django superusers, not a role.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction
from django.db.models import Q

from access import policy
from access.models import AUDIT, PERMISSION_NAMES, PERMISSIONS, Grant, Role
from core import hypervisor
from core.errors import Invalid, NotFound
from operations import audit
from operations.audit import Actor, attempt
from operations.models import AuditEvent

# Every permission a role may hold, in the order forms list them.
ROLE_PERMISSIONS = (*PERMISSIONS, (AUDIT, "Global: read every VM, task and audit entry (granted on all VMs only)"))
ROLE_PERMISSION_NAMES = (*PERMISSION_NAMES, AUDIT)


@dataclass(frozen=True)
class CommandActor(Actor):
    """Someone at the server's shell (``manage.py``): no app user, a label for the trail."""

    label: str = ""

    @property
    def username(self) -> str:
        return self.label


def command_actor() -> CommandActor:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return CommandActor(user=None, request_id=audit.new_request_id(), label=f"{who} (manage.py)"[:150])


def check_admin(actor: Actor, action: str) -> None:
    """Only admins (superusers) and the server's shell change grants and roles, whatever
    Django model permissions a staff account holds; a refused attempt is audited too."""
    if isinstance(actor, CommandActor):
        return
    with attempt(action, actor):
        policy.require_admin(actor.user)


# ---------------------------------------------------------------------------
# Lookups, with messages that say what exists


def get_role(role: Role | str) -> Role:
    if isinstance(role, Role):
        return role
    found = Role.objects.filter(name=role).first()
    if found is None:
        names = ", ".join(Role.objects.values_list("name", flat=True)) or "none"
        hint = " Admins are Django superusers, not a role." if role == "admin" else ""
        raise NotFound(f"There is no role named {role!r}. Roles: {names}.{hint}")
    return found


def get_user(username: str):
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise NotFound(f"There is no user named {username!r}.")
    return user


def get_group(name: str) -> Group:
    group = Group.objects.filter(name=name).first()
    if group is None:
        raise NotFound(f"There is no group named {name!r}.")
    return group


def is_global(role: Role) -> bool:
    return AUDIT in role.permissions


def _grantee(user, group) -> dict:
    if (user is None) == (group is None):
        raise Invalid("Grant to a user or to a group (one of them).")
    return {"user": user, "group": None} if user is not None else {"user": None, "group": group}


def _grantee_label(user, group) -> str:
    return f"user {user.username}" if user is not None else f"group {group.name}"


def resolve_scope(role: Role, vm: str | None) -> tuple[str, str]:
    """(vm_uuid, vm_name) for a new grant; ("", "") means all VMs."""
    if vm is None or vm == "":
        if not is_global(role) and vm is None:
            raise Invalid(f"Say where role {role.name} applies: on one VM or on all VMs.")
        return "", ""
    if is_global(role):
        raise Invalid(f"Role {role.name} is global (it reads everything): grant it on all VMs, not on one VM.")
    try:
        info = hypervisor.get_vm(vm)
    except NotFound:
        raise NotFound(f"There is no VM named {vm!r}.") from None
    return info.uuid, info.name


def _audit_params(grant: Grant) -> dict:
    params = {"role": grant.role.name, "scope": "vm" if grant.vm_uuid else "all"}
    if grant.user_id:
        params["user"] = grant.user.username
    else:
        params["group"] = grant.group.name
    return params


# ---------------------------------------------------------------------------
# Grants


def grant_role(
    role: Role | str, *, user=None, group=None, vm: str | None = None, actor: Actor, automatic: bool = False
) -> tuple[Grant, bool]:
    """Give ``role`` to a user or a group on VM ``vm`` (name or UUID), or on all VMs with
    ``vm=""``. ``vm=None`` is allowed for global roles only. Returns (grant, created);
    granting what is already granted changes nothing and writes no audit row.

    Only admins grant; ``automatic`` is the app's own doing on the actor's behalf (a
    clone's maker keeps on the clone the roles they hold on its source)."""
    if not automatic:
        check_admin(actor, "grant.add")
    role = get_role(role)
    grantee = _grantee(user, group)
    vm_uuid, vm_name = resolve_scope(role, vm)
    existing = Grant.objects.filter(role=role, vm_uuid=vm_uuid, **grantee).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            grant = Grant.objects.create(role=role, vm_uuid=vm_uuid, vm_name=vm_name, created_by=actor.username, **grantee)
            _record_grant(grant, actor, role, user, group)
    except IntegrityError:
        # The same grant made at the same moment elsewhere: it exists, nothing to add.
        return Grant.objects.get(role=role, vm_uuid=vm_uuid, **grantee), False
    if user is not None:
        policy.forget(user)
    return grant, True


def _record_grant(grant: Grant, actor: Actor, role: Role, user, group) -> None:
    audit.record(
        "grant.add",
        actor=actor,
        vm_name=grant.vm_name,
        vm_uuid=grant.vm_uuid,
        params=_audit_params(grant),
        stage=AuditEvent.Stage.EVENT,
        message=f"Granted {role.name} to {_grantee_label(user, group)} on {grant.scope}.",
    )


def find_grant(role: Role | str, *, user=None, group=None, vm: str | None = None) -> Grant:
    """The grant to revoke. ``vm`` is a name or UUID; a VM gone from libvirt is matched by
    the name or UUID its grants recorded."""
    role = get_role(role)
    grantee = _grantee(user, group)
    grants = Grant.objects.filter(role=role, **grantee).select_related("role", "user", "group")
    if vm is None or vm == "":
        if vm is None and not is_global(role):
            raise Invalid(f"Say which grant of role {role.name} to revoke: on one VM or on all VMs.")
        grants = grants.filter(vm_uuid="")
        where = "all VMs"
    else:
        try:
            uuid = hypervisor.get_vm(vm).uuid
            grants = grants.filter(vm_uuid=uuid)
        except NotFound:
            grants = grants.exclude(vm_uuid="").filter(Q(vm_uuid=vm) | Q(vm_name=vm))
        where = f"VM {vm}"
    grant = grants.first()
    if grant is None:
        raise NotFound(f"{_grantee_label(user, group).capitalize()} has no grant of role {role.name} on {where}.")
    return grant


def remove_grant(grant: Grant, *, actor: Actor) -> None:
    """Revoke one grant (by the page's remove button, Django admin, or ``revoke``)."""
    check_admin(actor, "grant.remove")
    with transaction.atomic():
        params = _audit_params(grant)
        message = f"Revoked {grant.role.name} from {grant.grantee} on {grant.scope}."
        vm_name, vm_uuid = grant.vm_name, grant.vm_uuid
        deleted, _ = Grant.objects.filter(pk=grant.pk).delete()
        if not deleted:
            raise NotFound("This grant was already removed.")
        audit.record(
            "grant.remove",
            actor=actor,
            vm_name=vm_name,
            vm_uuid=vm_uuid,
            params=params,
            stage=AuditEvent.Stage.EVENT,
            message=message,
        )
    if grant.user_id:
        policy.forget(grant.user)


def revoke_role(role: Role | str, *, user=None, group=None, vm: str | None = None, actor: Actor) -> Grant:
    """Take back a grant made with the same arguments as ``grant_role``."""
    grant = find_grant(role, user=user, group=group, vm=vm)
    remove_grant(grant, actor=actor)
    return grant


# ---------------------------------------------------------------------------
# Roles: data an admin defines from the permission list


def validate_permissions(permissions) -> list[str]:
    if not isinstance(permissions, list | tuple) or not all(isinstance(p, str) for p in permissions):
        raise Invalid("Permissions are a list of names.")
    unknown = sorted(set(permissions) - set(ROLE_PERMISSION_NAMES))
    if unknown:
        raise Invalid(f"Unknown permission(s): {', '.join(unknown)}. Known: {', '.join(ROLE_PERMISSION_NAMES)}.")
    if not permissions:
        raise Invalid("A role needs at least one permission.")
    # Stored in the canonical order, without duplicates.
    return [p for p in ROLE_PERMISSION_NAMES if p in permissions]


def define_role(name: str, permissions, description: str = "", *, actor: Actor) -> tuple[Role, bool]:
    """Create role ``name`` or change its permissions and description. Built-in roles are fixed."""
    check_admin(actor, "role.change")
    try:
        validate_slug(name)
    except ValidationError:
        raise Invalid(f"Invalid role name {name!r}: use letters, digits, '-' and '_'.") from None
    if name == "admin":
        raise Invalid("'admin' is not a role: admins are Django superusers.")
    permissions = validate_permissions(permissions)
    with transaction.atomic():
        role = Role.objects.select_for_update().filter(name=name).first()
        if role is not None and role.builtin:
            raise Invalid(f"Role {name} is built in and cannot be changed: define a new role instead.")
        created = role is None
        before = [] if created else list(role.permissions)
        if created:
            role = Role.objects.create(name=name, description=description, permissions=permissions)
        else:
            role.description, role.permissions = description, permissions
            role.save(update_fields=["description", "permissions"])
        audit.record(
            "role.add" if created else "role.change",
            actor=actor,
            params={"role": name, "permissions": permissions, **({} if created else {"before": before})},
            stage=AuditEvent.Stage.EVENT,
            message=f"Role {name} {'defined' if created else 'changed'}: {', '.join(permissions)}.",
        )
    return role, created


def delete_role(role: Role | str, *, actor: Actor) -> None:
    check_admin(actor, "role.remove")
    role = get_role(role)
    if role.builtin:
        raise Invalid(f"Role {role.name} is built in and cannot be deleted.")
    in_use = role.grants.count()
    if in_use:
        raise Invalid(f"Role {role.name} is granted {in_use} time(s): revoke those grants first.")
    with transaction.atomic():
        Role.objects.filter(pk=role.pk).delete()
        audit.record(
            "role.remove",
            actor=actor,
            params={"role": role.name, "permissions": role.permissions},
            stage=AuditEvent.Stage.EVENT,
            message=f"Role {role.name} deleted.",
        )
