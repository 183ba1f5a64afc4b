"""The built-in roles, present after every migrate and every flush (as content types
are), so tests that empty the database between runs find them too."""

from django.db.models.signals import post_migrate
from django.dispatch import receiver

BUILTIN_ROLES = {
    "viewer": ("See the VM and its snapshots", ["view"]),
    "operator": ("Day-to-day work: power, take and revert snapshots", ["view", "power", "snapshot_create", "snapshot_revert"]),
    "owner": (
        "Everything on the VM",
        ["view", "power", "snapshot_create", "snapshot_revert", "snapshot_edit", "snapshot_delete", "clone", "delete"],
    ),
    "auditor": ("Global: sees every VM, task and audit entry; changes nothing", ["view", "audit"]),
}


@receiver(post_migrate)
def create_builtin_roles(sender, using="default", **kwargs):
    if sender.name != "access":
        return
    from access.models import Role

    for name, (description, permissions) in BUILTIN_ROLES.items():
        Role.objects.using(using).update_or_create(
            name=name, defaults={"description": description, "permissions": permissions, "builtin": True}
        )
