"""The permission matrix: every role × every endpoint and page, expectations derived
from the role table (the Role rows), not written out by hand.

- A VM the user may not view answers 404, never 403, and its reason is the one an
  unknown VM gets; a visible VM without the permission answers 403 with the reason.
- Every mutating attempt leaves an audit row: allowed, denied or failed.
- No leak: an ungranted VM appears in no list and no count.

Allowed mutations are only queued here (no worker runs, the test's transaction is
rolled back), so the two shared VMs never change: one module-wide pair, made once.
To cover a new endpoint, add a row to ENDPOINTS.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass

import pytest
from django.test import Client
from rest_framework.test import APIClient

from access.models import Grant, Role
from core import hypervisor, tiny
from operations.models import AuditEvent, Operation
from tests.conftest import IMAGE_ROOT, _user, api_for, remove_vm

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "none", "viewer", "operator", "owner", "auditor", "admin"]
# Roles granted on the one VM; the auditor's is global by nature.
PER_VM_ROLES = {"viewer", "operator", "owner"}
# Not a permission: pages only admins reach, lists everyone may ask for (filtered), and
# the API's description (no data in it), which even the logged-out may read.
ADMIN, ANYONE, PUBLIC = "(admin)", "(anyone)", "(public)"


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str  # {vm}: the shared VM's name, {uuid}: its UUID, {task}: a task on it
    perm: str  # a per-VM permission, "audit", ADMIN or ANYONE
    ok: int = 200  # the answer when allowed
    body: dict | None = None  # {vm} in a value is the shared VM's name
    action: str = ""  # the audit action of a mutating request
    ok_outcome: str = ""  # when allowed, if not the status's own (a page redirects after a refusal too)

    @property
    def api(self) -> bool:
        return self.path.startswith("/api/")


SNAP = "/api/vms/{vm}/snapshots"
ENDPOINTS = [
    Endpoint("api vm list", "GET", "/api/vms", ANYONE),
    Endpoint("api vm", "GET", "/api/vms/{vm}", "view"),
    Endpoint("api snapshots", "GET", SNAP, "view"),
    Endpoint("api snapshots all", "GET", SNAP + "?all=true", "view"),
    Endpoint("api snapshot", "GET", SNAP + "/base", "view"),
    Endpoint("api current snapshot", "GET", SNAP + "/current", "view"),
    Endpoint("api create snapshot", "POST", SNAP, "snapshot_create", 202, {"name": "matrix-new"}, "snapshot.create"),
    Endpoint("api update snapshot", "PUT", SNAP + "/base", "snapshot_edit", 200, {"description": "changed"}, "snapshot.update"),
    Endpoint("api delete snapshot", "DELETE", SNAP + "/base", "snapshot_delete", 202, None, "snapshot.delete"),
    Endpoint("api revert snapshot", "POST", SNAP + "/base/revert", "snapshot_revert", 202, None, "snapshot.revert"),
    Endpoint("api tasks", "GET", "/api/tasks", ANYONE),
    Endpoint("api task", "GET", "/api/tasks/{task}", "view"),
    Endpoint("api audit", "GET", "/api/audit", "audit"),
    Endpoint("api history", "GET", "/api/vms/{vm}/history", "view"),
    Endpoint("api schema", "GET", "/api/schema/", PUBLIC),
    Endpoint("api docs", "GET", "/api/docs/", PUBLIC),
    Endpoint("api redoc", "GET", "/api/redoc/", PUBLIC),
    # VM lifecycle (the shared VM is shut off: only start makes sense, the others are 409).
    Endpoint("api start", "POST", "/api/vms/{vm}/start", "power", 202, None, "vm.start"),
    Endpoint("api shutdown", "POST", "/api/vms/{vm}/shutdown", "power", 409, None, "vm.shutdown"),
    Endpoint("api poweroff", "POST", "/api/vms/{vm}/poweroff", "power", 409, None, "vm.poweroff"),
    Endpoint("api reboot", "POST", "/api/vms/{vm}/reboot", "power", 409, None, "vm.reboot"),
    Endpoint("api suspend", "POST", "/api/vms/{vm}/suspend", "power", 409, None, "vm.suspend"),
    Endpoint("api resume", "POST", "/api/vms/{vm}/resume", "power", 409, None, "vm.resume"),
    Endpoint("api clone", "POST", "/api/vms/{vm}/clone", "clone", 202, {}, "vm.clone"),
    Endpoint("api delete vm", "DELETE", "/api/vms/{vm}", "delete", 202, None, "vm.delete"),
    # Pages
    Endpoint("page vm list", "GET", "/", ANYONE),
    Endpoint("page vm", "GET", "/vms/{vm}/", "view"),
    Endpoint("page history", "GET", "/vms/{vm}/history", "view"),
    Endpoint("page tasks", "GET", "/tasks/", ANYONE),
    Endpoint("page api tokens", "GET", "/tokens/", ANYONE),
    Endpoint("page task", "GET", "/tasks/{task}/", "view"),
    # Without htmx, the progress bar's URL only redirects to the task page (which checks).
    Endpoint("page task progress", "GET", "/tasks/{task}/progress/", ANYONE, 302),
    Endpoint("page task watch", "GET", "/tasks/vm/{uuid}/watch/", "view", 204),
    Endpoint("page audit", "GET", "/audit/", "audit"),
    Endpoint("page audit csv", "GET", "/audit/export.csv", "audit"),
    Endpoint("page grants", "GET", "/grants/", ADMIN),
    # Page actions (no JavaScript: POST, then a redirect to the VM page).
    Endpoint("page snapshot", "GET", "/vms/{vm}/snapshots/base/", "view", 302),
    Endpoint(
        "page take snapshot", "POST", "/vms/{vm}/snapshots/", "snapshot_create", 302, {"name": "matrix-page"}, "snapshot.create"
    ),
    Endpoint("page edit form", "GET", "/vms/{vm}/snapshots/base/edit/", "snapshot_edit"),
    Endpoint(
        "page edit snapshot",
        "POST",
        "/vms/{vm}/snapshots/base/edit/",
        "snapshot_edit",
        302,
        {"name": "base", "description": "x"},
        "snapshot.update",
    ),
    Endpoint("page revert confirm", "GET", "/vms/{vm}/snapshots/base/revert/", "snapshot_revert"),
    Endpoint("page revert", "POST", "/vms/{vm}/snapshots/base/revert/", "snapshot_revert", 302, {}, "snapshot.revert"),
    Endpoint("page delete confirm", "GET", "/vms/{vm}/snapshots/base/delete/", "snapshot_delete"),
    Endpoint(
        "page delete snapshot",
        "POST",
        "/vms/{vm}/snapshots/base/delete/",
        "snapshot_delete",
        302,
        {"mode": "node"},
        "snapshot.delete",
    ),
    Endpoint("page start confirm", "GET", "/vms/{vm}/power/start/", "power"),
    Endpoint("page start", "POST", "/vms/{vm}/power/start/", "power", 302, {}, "vm.start"),
    Endpoint("page poweroff", "POST", "/vms/{vm}/power/poweroff/", "power", 302, {}, "vm.poweroff", AuditEvent.Outcome.FAILED),
    Endpoint("page clone form", "GET", "/vms/{vm}/clone/", "clone"),
    Endpoint("page clone", "POST", "/vms/{vm}/clone/", "clone", 302, {}, "vm.clone"),
    Endpoint("page delete vm form", "GET", "/vms/{vm}/delete/", "delete"),
    Endpoint("page delete vm", "POST", "/vms/{vm}/delete/", "delete", 302, {"confirm": "{vm}"}, "vm.delete"),
]


def expected_status(role: str, permissions: set[str], endpoint: Endpoint) -> int:
    """What ``role`` (holding ``permissions`` on the VM, from the role table) gets from ``endpoint``."""
    if endpoint.perm == PUBLIC:
        return endpoint.ok
    if role == "anonymous":
        return 401 if endpoint.api else 302
    admin = role == "admin"
    if endpoint.perm == ANYONE:
        return endpoint.ok
    if endpoint.perm == ADMIN:
        return endpoint.ok if admin else 403
    if endpoint.perm == "audit":
        return endpoint.ok if admin or "audit" in permissions else 403
    if not (admin or "view" in permissions):
        return 404
    return endpoint.ok if admin or endpoint.perm in permissions else 403


def expected_outcome(status: int, endpoint: Endpoint) -> str:
    if status == endpoint.ok and endpoint.ok_outcome:
        return endpoint.ok_outcome
    if status < 400:
        return AuditEvent.Outcome.SUCCESS
    return AuditEvent.Outcome.DENIED if status in (401, 403, 404) else AuditEvent.Outcome.FAILED


# ---------------------------------------------------------------------------
# Fixtures: one pair of VMs for the module (never changed), users per test


@pytest.fixture(scope="module")
def shared_vms():
    path = IMAGE_ROOT / f"matrix-{secrets.token_hex(4)}"
    made = []
    try:
        for label in ("granted", "hidden"):
            vm = tiny.create_tiny_vm(f"vstest-{label}-{secrets.token_hex(3)}", image_dir=path)
            made.append(vm.uuid)
        hypervisor.create_snapshot(made[0], "base", "the matrix's snapshot")
        yield hypervisor.get_vm(made[0]), hypervisor.get_vm(made[1])
    finally:
        for uuid in made:
            remove_vm(uuid)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def as_role(fast_passwords, shared_vms):
    """``as_role(role)`` -> (user or None, permissions on the shared VM from the role table)."""
    vm = shared_vms[0]

    def make(role: str):
        if role == "anonymous":
            return None, set()
        if role == "admin":
            return _user("matrix-admin", is_superuser=True, is_staff=True), set()
        user = _user(f"matrix-{role}")
        if role == "none":
            return user, set()
        db_role = Role.objects.get(name=role)
        on = vm if role in PER_VM_ROLES else None
        Grant.objects.create(role=db_role, user=user, vm_uuid=on.uuid if on else "", vm_name=on.name if on else "")
        return user, set(db_role.permissions)

    return make


def send(user, endpoint: Endpoint, vm_name: str, vm_uuid: str = "", task: int = 0):
    path = endpoint.path.format(vm=vm_name, uuid=vm_uuid, task=task)
    if endpoint.api:
        client = api_for(user) if user else APIClient()
        call = getattr(client, endpoint.method.lower())
        return call(path, endpoint.body, format="json") if endpoint.body is not None else call(path)
    client = Client()
    if user:
        client.force_login(user)
    if endpoint.method == "POST":
        return client.post(path, {k: v.format(vm=vm_name) for k, v in (endpoint.body or {}).items()})
    return client.generic(endpoint.method, path)


def _routes(patterns, prefix=""):
    for pattern in patterns:
        if hasattr(pattern, "url_patterns"):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern)


# Routes the matrix leaves to other tests, and why.
NOT_IN_MATRIX = {
    "/login/": "logging in itself: tests/test_login.py",
    "/logout/": "logging out: anyone may",
    "/favicon.ico": "a redirect to the static icon, for anyone: tests/test_pages.py",
    "/grants/add": "admin only, audited when refused: tests/vms/test_grants.py",
    "/grants/{id}/remove": "admin only, audited when refused: tests/vms/test_grants.py",
    "/api/tasks/{task}/cancel": "the requester or an admin, not a role: tests/operations/test_cancel.py",
    "/tokens/<int:token_id>/revoke": "one's own tokens only, not a role: tests/test_tokens.py",
}


def _normalized(route: str) -> str:
    for old, new in (
        ("<str:vm>", "{vm}"),
        ("<str:name>", "{vm}"),
        ("<str:vm_uuid>", "{uuid}"),
        ("<str:snapshot>", "base"),
        ("<int:task_id>", "{task}"),
        ("<int:grant_id>", "{id}"),
    ):
        route = route.replace(old, new)
    return "/" + route


def test_the_matrix_covers_every_route():
    """A new API route or page without a row here fails this test: add its row."""
    from django.urls import get_resolver

    covered = {e.path.split("?")[0] for e in ENDPOINTS}
    # A route with a parameter besides the VM (a power action) is covered by any of its rows.
    covered |= {e.path.replace("/start/", "/<str:action>/").replace("/poweroff/", "/<str:action>/") for e in ENDPOINTS}
    routes = {
        _normalized(route)
        for route in _routes(get_resolver().url_patterns)
        if not route.startswith(("admin/", "^admin/", "api/schema", "api/docs", "api/redoc", "static/"))
    }
    assert routes - covered - set(NOT_IN_MATRIX) == set()


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
@pytest.mark.parametrize("role", ROLES)
def test_matrix(role, endpoint, as_role, shared_vms):
    vm = shared_vms[0]
    user, permissions = as_role(role)
    task = Operation.objects.create(kind="snapshot.create", vm_name=vm.name, vm_uuid=vm.uuid, status="finished")
    response = send(user, endpoint, vm.name, vm.uuid, task.pk)
    want = expected_status(role, permissions, endpoint)
    assert response.status_code == want, getattr(response, "content", b"")[:500]
    if endpoint.api and want >= 400:
        data = response.json()
        assert data["code"] == want and data["reason"]
        if want == 404:
            # The same answer as for a VM that does not exist: the name is not leaked.
            unknown = send(user, endpoint, "vstest-no-such-vm", "00000000-0000-0000-0000-000000000000", 999999).json()["reason"]
            assert data["reason"] == unknown.replace("vstest-no-such-vm", vm.name).replace("#999999", f"#{task.pk}")
        if want == 403 and endpoint.perm not in (ADMIN, "audit"):
            assert endpoint.perm in data["reason"]
    if not endpoint.api and want == 403 and endpoint.perm not in (ADMIN, "audit"):
        assert endpoint.perm in response.content.decode()
    if endpoint.action and not (role == "anonymous" and not endpoint.api):
        # (An anonymous page POST is only sent to the login page: it reaches no service.)
        events = AuditEvent.objects.filter(action=endpoint.action, vm_name=vm.name, username=user.username if user else "")
        assert [e.outcome for e in events] == [expected_outcome(want, endpoint)]


def test_expectations_follow_the_role_table(db):
    """The matrix reads the Role rows: an admin's new role is checked like the built-in ones."""
    perms = set(Role.objects.get(name="operator").permissions)
    create = next(e for e in ENDPOINTS if e.name == "api create snapshot")
    delete = next(e for e in ENDPOINTS if e.name == "api delete snapshot")
    assert expected_status("operator", perms, create) == 202
    assert expected_status("operator", perms, delete) == 403
    assert expected_status("none", set(), delete) == 404


# ---------------------------------------------------------------------------
# No leak: the ungranted VM is in no list and no count


@pytest.fixture
def hidden_activity(shared_vms, fast_passwords):
    """Tasks and audit rows on the hidden VM, made by an admin."""
    hidden = shared_vms[1]
    boss = _user("matrix-boss", is_superuser=True, is_staff=True)
    assert api_for(boss).post(f"/api/vms/{hidden.name}/snapshots", {"name": "secret"}, format="json").status_code == 202
    assert Operation.objects.filter(vm_uuid=hidden.uuid).exists()
    return hidden


@pytest.mark.parametrize("role", ["none", "viewer", "operator", "owner"])
def test_an_ungranted_vm_is_in_no_list(role, as_role, shared_vms, hidden_activity):
    granted, hidden = shared_vms
    user, _ = as_role(role)
    api = api_for(user)
    visible = [granted.name] if role != "none" else []
    assert [vm["name"] for vm in api.get("/api/vms").json()] == visible
    assert api.get("/api/tasks").json() == []
    assert api.get(f"/api/tasks?vm={hidden.name}").json() == []
    assert api.get(f"/api/tasks?vm={hidden.uuid}").json() == []
    op = Operation.objects.get(vm_uuid=hidden.uuid)
    assert api.get(f"/api/tasks/{op.pk}").status_code == 404
    for path in (f"/api/vms/{hidden.name}", f"/api/vms/{hidden.uuid}", f"/api/vms/{hidden.name}/history"):
        assert api.get(path).status_code == 404, path
    # A mutation on it is 404 too, not 403.
    assert api.post(f"/api/vms/{hidden.name}/snapshots", {"name": "x1"}, format="json").status_code == 404
    client = Client()
    client.force_login(user)
    for path in ("/", "/tasks/"):
        html = client.get(path).content.decode()
        assert hidden.name not in html and hidden.uuid not in html, path
    assert client.get(f"/vms/{hidden.name}/history").status_code == 404
    assert client.get(f"/vms/{hidden.name}/").status_code == 404
    assert client.get(f"/tasks/{op.pk}/").status_code == 404


def test_auditor_and_admin_see_the_hidden_vm(as_role, shared_vms, hidden_activity):
    hidden = shared_vms[1]
    for role in ("auditor", "admin"):
        user, _ = as_role(role)
        api = api_for(user)
        assert hidden.name in [vm["name"] for vm in api.get("/api/vms").json()]
        assert [t["vm"] for t in api.get(f"/api/tasks?vm={hidden.name}").json()] == [hidden.name]
        assert api.get(f"/api/vms/{hidden.name}/history").status_code == 200
