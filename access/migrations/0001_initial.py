"""Roles and grants move here from the vms app: the tables stay as they are (vms_role,
vms_grant, with their rows and constraints); only Django's idea of who owns them changes."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        # The tables exist (made by vms' first migration) and hold the built-in roles.
        ("vms", "0002_builtin_roles"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Role",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.SlugField(max_length=64, unique=True)),
                        ("description", models.CharField(blank=True, max_length=200)),
                        ("permissions", models.JSONField(default=list, help_text='Permission names, e.g. ["view", "power"]')),
                        ("builtin", models.BooleanField(default=False, editable=False)),
                    ],
                    options={"db_table": "vms_role", "ordering": ["name"]},
                ),
                migrations.CreateModel(
                    name="Grant",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("vm_uuid", models.CharField(blank=True, db_index=True, help_text="Empty: all VMs", max_length=36)),
                        (
                            "vm_name",
                            models.CharField(blank=True, help_text="The VM's name when granted (for display)", max_length=200),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("created_by", models.CharField(blank=True, max_length=150)),
                        (
                            "group",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="vm_grants",
                                to="auth.group",
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="vm_grants",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "role",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT, related_name="grants", to="access.role"
                            ),
                        ),
                    ],
                    options={
                        "db_table": "vms_grant",
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("group__isnull", True), ("user__isnull", False)),
                                    models.Q(("group__isnull", False), ("user__isnull", True)),
                                    _connector="OR",
                                ),
                                name="grant_to_user_or_group",
                            ),
                            models.UniqueConstraint(fields=("role", "user", "vm_uuid"), name="unique_user_grant"),
                            models.UniqueConstraint(fields=("role", "group", "vm_uuid"), name="unique_group_grant"),
                        ],
                    },
                ),
            ],
            database_operations=[],
        )
    ]
