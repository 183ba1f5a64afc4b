"""Roles and grants now belong to the access app (access/migrations/0001): the tables
stay, only the vms app's record of them goes."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("vms", "0002_builtin_roles"), ("access", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Grant"), migrations.DeleteModel(name="Role")],
            database_operations=[],
        )
    ]
