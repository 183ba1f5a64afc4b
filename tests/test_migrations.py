"""Upgrading an install made before roles and grants moved from the vms app to access:
the tables stay, every row is kept, and the new code reads them."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

# The schema as it was before the layering (issue 10).
BEFORE = [
    ("vms", "0002_builtin_roles"),
    ("snapshots", "0001_initial"),
    ("operations", "0002_audit_append_only"),
    ("access", None),
]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state([t for t in targets if t[1]]).apps


@pytest.mark.django_db(transaction=True)
def test_an_upgrade_keeps_roles_grants_tasks_and_history():
    old = migrate(BEFORE)
    User = old.get_model("auth", "User")
    Role = old.get_model("vms", "Role")
    Grant = old.get_model("vms", "Grant")
    alice = User.objects.create(username="alice")
    role = Role.objects.create(name="reverter", permissions=["view", "snapshot_revert"])
    operator = Role.objects.get(name="operator")
    Grant.objects.create(role=role, user=alice, vm_uuid="8b0e0f54-0000-4000-8000-000000000001", vm_name="web1")
    Grant.objects.create(role=operator, user=alice, vm_uuid="")
    old.get_model("operations", "Operation").objects.create(
        kind="snapshot.create", vm_name="web1", vm_uuid="8b0e0f54-0000-4000-8000-000000000001", status="finished"
    )
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    from django.contrib.auth.models import User as NewUser

    from access import policy
    from access.models import Grant as NewGrant
    from access.models import Role as NewRole
    from operations.models import Operation

    assert NewRole.objects.get(name="reverter").permissions == ["view", "snapshot_revert"]
    assert {(g.role.name, g.vm_name) for g in NewGrant.objects.filter(user__username="alice")} == {
        ("reverter", "web1"),
        ("operator", ""),
    }
    you = policy.access_for(NewUser.objects.get(username="alice"))
    assert you.can("snapshot_revert", "8b0e0f54-0000-4000-8000-000000000001")
    assert you.can("power", "any-other-vm") and not you.can("delete", "any-other-vm")
    assert Operation.objects.get(vm_name="web1").status == "finished"
    # The constraints came along with the tables: a grant is still to a user or a group.
    with pytest.raises(Exception, match="(?i)constraint|unique"):
        NewGrant.objects.create(
            role=NewRole.objects.get(name="reverter"),
            user=NewUser.objects.get(username="alice"),
            vm_uuid="8b0e0f54-0000-4000-8000-000000000001",
        )
