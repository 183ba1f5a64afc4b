from django.db import migrations


def create(apps, schema_editor):
    # The same table the post_migrate handler keeps up to date (access/roles.py).
    from access.roles import BUILTIN_ROLES

    Role = apps.get_model("vms", "Role")
    for name, (description, permissions) in BUILTIN_ROLES.items():
        Role.objects.update_or_create(name=name, defaults={"description": description, "permissions": permissions, "builtin": True})


class Migration(migrations.Migration):
    dependencies = [("vms", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
