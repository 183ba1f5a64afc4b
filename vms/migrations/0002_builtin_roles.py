from django.db import migrations

ROLES = {
    "viewer": ("See the VM and its snapshots", ["view"]),
    "operator": ("Day-to-day work: power, take and revert snapshots", ["view", "power", "snapshot_create", "snapshot_revert"]),
    "owner": (
        "Everything on the VM",
        ["view", "power", "snapshot_create", "snapshot_revert", "snapshot_edit", "snapshot_delete", "clone", "delete"],
    ),
    "auditor": ("Global: sees every VM, task and audit entry; changes nothing", ["view", "audit"]),
}


def create(apps, schema_editor):
    Role = apps.get_model("vms", "Role")
    for name, (description, permissions) in ROLES.items():
        Role.objects.update_or_create(name=name, defaults={"description": description, "permissions": permissions, "builtin": True})


class Migration(migrations.Migration):
    dependencies = [("vms", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
