"""Granting roles: management commands, the grants pages, Django admin; every change audited."""

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError

from access.models import Grant, Role
from access.policy import access_for
from operations.models import AuditEvent
from tests.conftest import api_for
from vms import grants

pytestmark = pytest.mark.django_db


def run(command, *args):
    call_command(command, *args)


def fresh(user):
    """The user as a new request would load it (permissions are cached per object)."""
    return type(user).objects.get(pk=user.pk)


# ---------------------------------------------------------------------------
# Commands


def test_grant_on_one_vm_follows_the_uuid(make_user, vm):
    alice = make_user("alice")
    run("grant", "alice", "operator", "--vm", vm.name)
    grant = Grant.objects.get(user=alice)
    assert grant.role.name == "operator" and grant.vm_uuid == vm.uuid and grant.vm_name == vm.name
    assert access_for(fresh(alice)).perms(vm.uuid) == {"view", "power", "snapshot_create", "snapshot_revert"}
    event = AuditEvent.objects.get(action="grant.add")
    assert event.stage == "event" and event.outcome == "success"
    assert event.vm_uuid == vm.uuid and event.params == {"role": "operator", "scope": "vm", "user": "alice"}
    assert event.username.endswith("(manage.py)")
    assert "operator" in event.message and "alice" in event.message


def test_grant_by_uuid_and_on_all_vms(make_user, vm, make_vm):
    bob = make_user("bob")
    run("grant", "bob", "viewer", "--vm", vm.uuid)
    run("grant", "bob", "owner", "--all-vms")
    other = make_vm()
    access = access_for(fresh(bob))
    assert access.can("delete", other.uuid) and access.can("delete", vm.uuid)
    assert Grant.objects.get(user=bob, role__name="owner").vm_uuid == ""


def test_grant_auditor_is_global(make_user, vm):
    carol = make_user("carol")
    run("grant", "carol", "auditor")
    access = access_for(fresh(carol))
    assert access.can_audit and access.can_view(vm.uuid) and not access.can("snapshot_create", vm.uuid)
    with pytest.raises(CommandError, match="global"):
        run("grant", "carol", "auditor", "--vm", vm.name)


def test_grant_to_a_group(make_user, vm):
    dave = make_user("dave")
    ops = Group.objects.create(name="ops")
    dave.groups.add(ops)
    run("grant", "--group", "ops", "owner", "--vm", vm.name)
    assert Grant.objects.get(group=ops).role.name == "owner"
    assert access_for(fresh(dave)).can("snapshot_delete", vm.uuid)
    run("revoke", "--group", "ops", "owner", "--vm", vm.name)
    assert not Grant.objects.exists()
    assert not access_for(fresh(dave)).can_view(vm.uuid)
    assert AuditEvent.objects.get(action="grant.remove").params["group"] == "ops"


def test_revoke_with_the_same_arguments(make_user, vm):
    erin = make_user("erin", role="viewer", vm=vm)
    run("revoke", "erin", "viewer", "--vm", vm.name)
    assert not Grant.objects.filter(user=erin).exists()
    event = AuditEvent.objects.get(action="grant.remove")
    assert event.vm_uuid == vm.uuid and event.params["role"] == "viewer"
    with pytest.raises(CommandError, match="has no grant"):
        run("revoke", "erin", "viewer", "--vm", vm.name)


def test_granting_twice_changes_nothing(make_user, vm):
    make_user("fay")
    run("grant", "fay", "viewer", "--vm", vm.name)
    run("grant", "fay", "viewer", "--vm", vm.name)
    assert Grant.objects.count() == 1
    assert AuditEvent.objects.filter(action="grant.add").count() == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["nobody", "viewer", "--all-vms"], "no user named 'nobody'"),
        (["gus", "superhero", "--all-vms"], "no role named 'superhero'. Roles: auditor, operator, owner, viewer"),
        (["gus", "admin", "--all-vms"], "superusers"),
        (["gus", "viewer", "--vm", "vstest-no-such-vm"], "no VM named 'vstest-no-such-vm'"),
        (["gus", "viewer"], "--vm NAME or --all-vms"),
        (["gus"], "Expected USER ROLE"),
        (["--group", "nogroup", "viewer", "--all-vms"], "no group named 'nogroup'"),
    ],
)
def test_command_errors_are_clear(make_user, args, message):
    make_user("gus")
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(".", r"\.")):
        run("grant", *args)
    assert not Grant.objects.exists()
    assert not AuditEvent.objects.filter(action="grant.add").exists()


def test_revoke_on_a_vm_gone_from_libvirt(make_user, vm):
    hank = make_user("hank")
    Grant.objects.create(
        role=Role.objects.get(name="viewer"), user=hank, vm_uuid="0" * 8 + "-0000-0000-0000-" + "0" * 12, vm_name="gone-vm"
    )
    run("revoke", "hank", "viewer", "--vm", "gone-vm")
    assert not Grant.objects.exists()


# ---------------------------------------------------------------------------
# Service: roles are data


def test_admin_defined_role_works_without_code(make_user, vm):
    actor = grants.command_actor()
    role, created = grants.define_role("snapshotter", ["view", "snapshot_create"], "Takes snapshots", actor=actor)
    assert created and role.permissions == ["view", "snapshot_create"]
    ivy = make_user("ivy")
    grants.grant_role("snapshotter", user=ivy, vm=vm.name, actor=actor)
    assert access_for(fresh(ivy)).perms(vm.uuid) == {"view", "snapshot_create"}
    assert AuditEvent.objects.get(action="role.add").params["permissions"] == ["view", "snapshot_create"]


def test_role_permissions_are_validated():
    actor = grants.command_actor()
    with pytest.raises(grants.Invalid, match="Unknown permission"):
        grants.define_role("bad", ["view", "fly"], actor=actor)
    with pytest.raises(grants.Invalid, match="built in"):
        grants.define_role("viewer", ["view", "delete"], actor=actor)
    with pytest.raises(grants.Invalid, match="at least one"):
        grants.define_role("empty", [], actor=actor)


# ---------------------------------------------------------------------------
# Pages


def test_admin_lists_adds_and_removes_grants(client, admin_user, make_user, vm):
    jo = make_user("jo")
    client.force_login(admin_user)
    page = client.get("/grants/")
    assert page.status_code == 200
    html = page.content.decode()
    assert vm.name in html and "All VMs" in html and "user:jo" in html
    response = client.post("/grants/add", {"grantee": "user:jo", "role": "operator", "vm": vm.uuid})
    assert response.status_code == 302 and response["Location"] == "/grants/"
    grant = Grant.objects.get(user=jo)
    assert grant.vm_uuid == vm.uuid and grant.created_by == "root-admin"
    event = AuditEvent.objects.get(action="grant.add")
    assert event.username == "root-admin" and event.client_ip == "127.0.0.1"
    listed = client.get("/grants/").content.decode()
    assert "user jo" in listed and f"/grants/{grant.pk}/remove" in listed
    assert client.post(f"/grants/{grant.pk}/remove").status_code == 302
    assert not Grant.objects.exists()
    assert AuditEvent.objects.get(action="grant.remove").username == "root-admin"


def test_add_form_errors_are_shown(client, admin_user, make_user, vm):
    make_user("kim")
    client.force_login(admin_user)
    response = client.post("/grants/add", {"grantee": "user:kim", "role": "auditor", "vm": vm.uuid})
    assert response.status_code == 400
    assert "global" in response.content.decode()
    assert client.post("/grants/add", {"grantee": "user:ghost", "role": "viewer", "vm": ""}).status_code == 400
    assert not Grant.objects.exists()


def test_group_grant_from_the_page(client, admin_user, vm):
    Group.objects.create(name="night-shift")
    client.force_login(admin_user)
    assert client.post("/grants/add", {"grantee": "group:night-shift", "role": "viewer", "vm": ""}).status_code == 302
    assert Grant.objects.get().group.name == "night-shift"


def test_non_admins_are_refused_and_audited(client, make_user, vm):
    owner = make_user("lee", role="owner", vm=vm)
    client.force_login(owner)
    assert client.get("/grants/").status_code == 403
    response = client.post("/grants/add", {"grantee": "user:lee", "role": "owner", "vm": ""})
    assert response.status_code == 403
    assert Grant.objects.count() == 1
    denied = AuditEvent.objects.get(action="grant.add")
    assert denied.outcome == "denied" and denied.username == "lee"
    grant = Grant.objects.get()
    assert client.post(f"/grants/{grant.pk}/remove").status_code == 403
    assert Grant.objects.count() == 1
    assert AuditEvent.objects.get(action="grant.remove").outcome == "denied"


def test_anonymous_is_sent_to_login(client):
    response = client.get("/grants/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_remove_needs_post(client, admin_user, make_user, vm):
    user = make_user("max", role="viewer", vm=vm)
    client.force_login(admin_user)
    grant = Grant.objects.get(user=user)
    assert client.get(f"/grants/{grant.pk}/remove").status_code == 405
    assert Grant.objects.count() == 1


def test_remove_needs_csrf(admin_user, make_user, vm):
    from django.test import Client

    user = make_user("ned", role="viewer", vm=vm)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    grant = Grant.objects.get(user=user)
    assert strict.post(f"/grants/{grant.pk}/remove").status_code == 403
    assert Grant.objects.count() == 1


def test_grant_is_usable_right_away_through_the_api(client, admin_user, make_user, vm):
    olga = make_user("olga")
    assert api_for(olga).get(f"/api/vms/{vm.name}").status_code == 404
    client.force_login(admin_user)
    client.post("/grants/add", {"grantee": "user:olga", "role": "viewer", "vm": vm.uuid})
    assert api_for(fresh(olga)).get(f"/api/vms/{vm.name}").status_code == 200


# ---------------------------------------------------------------------------
# Django admin


def test_admin_grant_add_and_delete_are_audited(client, admin_user, make_user, vm):
    pat = make_user("pat")
    client.force_login(admin_user)
    assert client.get("/admin/access/grant/add/").status_code == 200
    role = Role.objects.get(name="viewer")
    response = client.post("/admin/access/grant/add/", {"role": role.pk, "user": pat.pk, "group": "", "vm": vm.uuid})
    assert response.status_code == 302, response.content.decode()[:2000]
    grant = Grant.objects.get(user=pat)
    assert grant.vm_uuid == vm.uuid and grant.vm_name == vm.name
    assert AuditEvent.objects.get(action="grant.add").username == "root-admin"
    # Grants are not edited, only added and removed.
    assert client.post(f"/admin/access/grant/{grant.pk}/change/", {"role": role.pk, "user": pat.pk}).status_code == 403
    response = client.post(f"/admin/access/grant/{grant.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Grant.objects.exists()
    assert AuditEvent.objects.get(action="grant.remove").params["user"] == "pat"


def test_admin_defines_a_role_from_the_permission_list(client, admin_user):
    client.force_login(admin_user)
    page = client.get("/admin/access/role/add/").content.decode()
    assert "snapshot_revert" in page and "audit" in page
    response = client.post(
        "/admin/access/role/add/", {"name": "reverter", "description": "", "permissions": ["view", "snapshot_revert"]}
    )
    assert response.status_code == 302
    assert Role.objects.get(name="reverter").permissions == ["view", "snapshot_revert"]
    assert AuditEvent.objects.get(action="role.add").username == "root-admin"
    bad = client.post("/admin/access/role/add/", {"name": "bad", "permissions": ["teleport"]})
    assert bad.status_code == 200 and not Role.objects.filter(name="bad").exists()
    builtin = Role.objects.get(name="owner")
    assert client.post(f"/admin/access/role/{builtin.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Role.objects.filter(name="owner").exists()


def test_admin_user_and_group_changes_are_audited(client, admin_user, make_user, vm):
    client.force_login(admin_user)
    assert client.post("/admin/auth/group/add/", {"name": "ops"}).status_code == 302
    ops = Group.objects.get(name="ops")
    assert AuditEvent.objects.get(action="group.add").params == {"group": "ops"}
    quinn = make_user("quinn")
    form = {
        "username": "quinn",
        "is_active": "on",
        "groups": [ops.pk],
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "email": "quinn@example.com",
    }
    response = client.post(f"/admin/auth/user/{quinn.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    change = AuditEvent.objects.get(action="user.change")
    assert change.params["changed"] == ["groups"] and change.params["groups"] == ["ops"]
    assert change.username == "root-admin"
    response = client.post(f"/admin/auth/user/{quinn.pk}/change/", {**form, "is_superuser": "on"})
    assert response.status_code == 302
    promoted = AuditEvent.objects.filter(action="user.change").order_by("-id").first()
    assert promoted.params["is_superuser"] is True and "is_superuser → True" in promoted.message
    # Deleting a group takes its grants with it: each removal is on the record.
    grants.grant_role("viewer", group=ops, vm=vm.name, actor=grants.command_actor())
    assert client.post(f"/admin/auth/group/{ops.pk}/delete/", {"post": "yes"}).status_code == 302
    assert AuditEvent.objects.get(action="grant.remove").params["group"] == "ops"
    assert AuditEvent.objects.get(action="group.remove").params == {"group": "ops"}
    new_password = {"password1": "a-long-new-secret-42", "password2": "a-long-new-secret-42", "usable_password": "true"}
    assert client.post(f"/admin/auth/user/{quinn.pk}/password/", new_password).status_code == 302
    assert AuditEvent.objects.get(action="user.password").params == {"user": "quinn"}
    assert client.post(f"/admin/auth/user/{quinn.pk}/delete/", {"post": "yes"}).status_code == 302
    assert AuditEvent.objects.get(action="user.remove").params == {"user": "quinn"}


def test_old_admin_addresses_of_roles_and_grants_lead_to_the_new_ones(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/admin/vms/role/add/")
    assert response.status_code == 301 and response["Location"] == "/admin/access/role/add/"
    assert client.get("/admin/vms/grant/", follow=True).status_code == 200


def test_a_staff_account_with_model_permissions_cannot_grant_itself_anything(client, make_user, vm):
    from django.contrib.auth.models import Permission

    from core.errors import Forbidden
    from operations.audit import Actor

    staff = make_user("mallory", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label__in=["access", "auth"]))
    client.force_login(staff)
    owner = Role.objects.get(name="owner")
    assert client.get("/admin/access/grant/").status_code == 403
    response = client.post("/admin/access/grant/add/", {"role": owner.pk, "user": staff.pk, "group": "", "vm": ""})
    assert response.status_code == 403
    assert client.get("/admin/access/role/add/").status_code == 403
    assert client.get(f"/admin/auth/user/{staff.pk}/change/").status_code == 403  # no is_superuser for oneself
    with pytest.raises(Forbidden):
        grants.grant_role("owner", user=staff, vm="", actor=Actor(user=staff))
    with pytest.raises(Forbidden):
        grants.define_role("everything", ["view", "delete"], actor=Actor(user=staff))
    assert not Grant.objects.filter(user=staff).exists()
    assert AuditEvent.objects.filter(action="grant.add", outcome="denied", username="mallory").exists()
