"""The VM page and its snapshot actions without JavaScript (POST, redirect, GET), and
the htmx fragments the same URLs answer with. Real libvirt; tasks run in-process."""

import re
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core import hypervisor
from operations.models import AuditEvent, Operation
from snapshots.models import SnapshotRecord
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sync_tasks")]

HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "vm-page"}


@pytest.fixture
def admin(client, admin_user):
    client.force_login(admin_user)
    return client


def page(client, vm, **params) -> str:
    response = client.get(f"/vms/{vm.name}/", params)
    assert response.status_code == 200
    return response.content.decode()


def treeitem(html: str, name: str) -> str:
    """The opening tag of the tree item whose accessible name is ``name``."""
    label = re.search(rf'<span class="node-name" id="(snap-\d+)-name">{re.escape(name)}</span>', html)
    assert label, f"no tree item named {name!r}"
    item = re.search(rf'<li role="treeitem" id="{label.group(1)}"[^>]*>', html)
    return item.group(0)


def level(html: str, name: str) -> int:
    return int(re.search(r'aria-level="(\d+)"', treeitem(html, name)).group(1))


def names_in_tree(html: str) -> list[str]:
    return [unescape(n) for n in re.findall(r'<span class="node-name" id="snap-\d+-name">([^<]*)</span>', html)]


def take(client, vm, name="", description="", expect=302):
    response = client.post(f"/vms/{vm.name}/snapshots/", {"name": name, "description": description})
    assert response.status_code == expect, response.content.decode()[:2000]
    return response


def messages_of(html: str) -> str:
    return unescape(re.search(r'<div id="messages".*?</div>', html, re.S).group(0))


# ---------------------------------------------------------------------------
# The page


def test_page_shows_header_form_and_empty_tree(admin, running_vm):
    html = page(admin, running_vm)
    assert f'<h1 id="vm-name">{running_vm.name}</h1>' in html
    assert "running" in html and "64 MiB" in html and "qcow2" in html
    assert '<label for="id_name">Name' in html and '<label for="id_description">Description</label>' in html
    assert re.search(r'placeholder="snapshot-\d{8}-\d{6}"', html)
    assert ">Take snapshot</button>" in html
    assert "includes its memory" in html and "pauses briefly" in html
    assert "No snapshots yet." in html


def test_take_snapshot_redirects_and_shows_it_in_the_tree(admin, vm):
    response = take(admin, vm, "first", "Before the upgrade")
    op = Operation.objects.get()
    assert response["Location"] == f"/vms/{vm.name}/?task={op.pk}"
    html = admin.get(response["Location"]).content.decode()
    assert "Taking snapshot first: task #" in messages_of(html)
    assert op.pk and f'id="task-{op.pk}"' in html and "Done:" in html and "Snapshot first taken" in html
    item = treeitem(html, "first")
    assert 'aria-current="true"' in item and 'aria-level="1"' in item
    assert "Before the upgrade" in html
    assert "you are here" in html
    assert "■ disks only" in html  # a shut-off VM's snapshot holds disks only
    assert re.search(r'<time datetime="20\d\d-\d\d-\d\dT[\d:]+\+00:00" title="20[^"]+">', html)


def test_second_snapshot_is_nested_under_the_first_and_current(admin, running_vm):
    take(admin, running_vm, "first")
    take(admin, running_vm, "second")
    html = page(admin, running_vm)
    assert names_in_tree(html) == ["first", "second"]
    assert level(html, "second") == level(html, "first") + 1
    assert 'aria-current="true"' in treeitem(html, "second")
    assert 'aria-current="true"' not in treeitem(html, "first")
    assert 'aria-expanded="true"' in treeitem(html, "first")
    assert "▶ with memory" in html
    assert html.count('role="tree"') == 1


def test_default_name_is_used_when_empty(admin, vm):
    take(admin, vm)
    record = SnapshotRecord.objects.get()
    assert re.fullmatch(r"snapshot-\d{8}-\d{6}", record.name)
    assert record.name in names_in_tree(page(admin, vm))


@pytest.mark.parametrize(
    ("name", "status", "error"),
    [
        ("bad name!", 400, "Invalid snapshot name"),
        ("12345", 400, "Invalid snapshot name"),
        ("first", 409, "already has a snapshot named"),
    ],
)
def test_invalid_name_is_shown_at_the_field_with_what_was_typed(admin, vm, name, status, error):
    hypervisor.create_snapshot(vm.uuid, "first")
    page(admin, vm)  # the page the user types into shows (and records) it
    response = take(admin, vm, name, "my words", expect=status)
    html = response.content.decode()
    field = re.search(r'<input id="id_name"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in field
    assert f'value="{name}"' in unescape(field)
    assert "name-error" in field
    assert error in unescape(re.search(r'<p class="field-error" id="name-error">.*?</p>', html, re.S).group(0))
    assert ">my words</textarea>" in html
    assert Operation.objects.count() == 0
    # Refused attempts are audited like any other.
    assert AuditEvent.objects.filter(action="snapshot.create", outcome="failed").count() == 1


def test_too_long_description_is_shown_at_its_field(admin, vm):
    html = take(admin, vm, "ok", "x" * 1001, expect=400).content.decode()
    assert 'id="description-error"' in html
    assert re.search(r'<textarea id="id_description"[^>]*aria-invalid="true"', html)


def test_raw_disk_is_explained_before_and_after_trying(admin, make_vm):
    raw = make_vm(disk_format="raw")
    html = page(admin, raw)
    assert "Snapshots are not possible for this VM." in html and "raw format" in html
    assert re.search(r"<fieldset disabled", html)
    response = take(admin, raw, "try", expect=400)
    html = unescape(response.content.decode())
    assert re.search(r'<p class="error" role="alert" id="take-error">.*Disk vda .* raw format', html, re.S)


def test_rename_and_describe(admin, vm):
    take(admin, vm, "first")
    record = SnapshotRecord.objects.get()
    form = admin.get(f"/vms/{vm.name}/snapshots/first/edit/").content.decode()
    assert '<label for="edit-' in form and 'value="first"' in form
    response = admin.post(f"/vms/{vm.name}/snapshots/first/edit/", {"name": "renamed", "description": "Now described"})
    assert response.status_code == 302
    assert response["Location"] == f"/vms/{vm.name}/#snap-{record.pk}"
    html = page(admin, vm)
    assert names_in_tree(html) == ["renamed"]
    assert "Now described" in html
    assert "Snapshot first saved as renamed." in messages_of(html)
    assert "libvirt name <code>first</code>" in html  # libvirt cannot rename: the app keeps both


def test_bad_rename_is_shown_at_the_field(admin, vm):
    take(admin, vm, "first")
    take(admin, vm, "second")
    response = admin.post(f"/vms/{vm.name}/snapshots/second/edit/", {"name": "first", "description": "kept"})
    assert response.status_code == 409
    html = response.content.decode()
    field = re.search(r'<input id="edit-\d+-name"[^>]*>', html).group(0)
    assert 'value="first"' in field and 'aria-invalid="true"' in field
    assert "already has a snapshot named" in html and ">kept</textarea>" in html
    response = admin.post(f"/vms/{vm.name}/snapshots/second/edit/", {"name": "", "description": ""})
    assert response.status_code == 400
    assert "Invalid snapshot name" in response.content.decode()
    assert names_in_tree(page(admin, vm)) == ["first", "second"]


def test_revert_asks_first_then_moves_the_current_marker(admin, vm):
    take(admin, vm, "first")
    take(admin, vm, "second")
    confirm = admin.get(f"/vms/{vm.name}/snapshots/first/revert/").content.decode()
    assert "present state is discarded" in confirm
    assert ">Revert to first</button>" in confirm and ">Cancel</a>" in confirm
    assert 'aria-current="true"' in treeitem(page(admin, vm), "second")  # asking changed nothing
    response = admin.post(f"/vms/{vm.name}/snapshots/first/revert/")
    op = Operation.objects.filter(kind="snapshot.revert").get()
    assert response["Location"] == f"/vms/{vm.name}/?task={op.pk}"
    html = page(admin, vm, task=op.pk)
    assert 'aria-current="true"' in treeitem(html, "first")
    assert 'aria-current="true"' not in treeitem(html, "second")
    # The outcome shows where the revert was started: in first's tree item.
    item_html = html[html.index(treeitem(html, "first")) :]
    assert item_html.index(f'id="task-{op.pk}"') < item_html.index("</li>")
    assert "Reverted" in html


def test_delete_offers_only_this_or_with_descendants(admin, vm):
    take(admin, vm, "base")
    take(admin, vm, "child")
    take(admin, vm, "grandchild")
    confirm = unescape(admin.get(f"/vms/{vm.name}/snapshots/base/delete/").content.decode())
    assert ">Only this snapshot</button>" in confirm
    assert ">With its 2 descendants</button>" in confirm
    doomed = re.search(r'<ul class="doomed".*?</ul>', confirm, re.S).group(0)
    assert "child" in doomed and "grandchild" in doomed
    assert "move up under the top of the tree" in confirm or "moves up under the top of the tree" in confirm


def test_delete_only_this_moves_children_up(admin, vm):
    take(admin, vm, "base")
    take(admin, vm, "child")
    response = admin.post(f"/vms/{vm.name}/snapshots/base/delete/", {"mode": "node"})
    assert response.status_code == 302
    html = page(admin, vm)
    assert names_in_tree(html) == ["child"]
    assert level(html, "child") == 1


def test_delete_with_descendants(admin, vm):
    take(admin, vm, "keep")
    take(admin, vm, "base")
    take(admin, vm, "child")
    take(admin, vm, "grandchild")
    response = admin.post(f"/vms/{vm.name}/snapshots/base/delete/", {"mode": "all"})
    op = Operation.objects.filter(kind="snapshot.delete").get()
    assert response["Location"] == f"/vms/{vm.name}/?task={op.pk}"
    html = page(admin, vm, task=op.pk)
    assert names_in_tree(html) == ["keep"]
    assert "and its 2 descendants deleted" in html
    assert hypervisor.snapshot_names(vm.uuid)[0] == ["keep"]


def test_an_operation_in_progress_is_shown_and_blocks_conflicting_actions(admin, make_user, vm):
    take(admin, vm, "first")
    other = make_user("olga", role="owner", vm=vm)
    running = Operation.objects.create(
        kind="snapshot.revert",
        vm_name=vm.name,
        vm_uuid=vm.uuid,
        snapshot="first",
        params={"record": SnapshotRecord.objects.get().pk},
        user=other,
        username="olga",
        status=Operation.Status.RUNNING,
        progress=40,
        message="Restoring the disks: 2 s elapsed",
    )
    html = page(admin, vm)
    assert re.search(r'role="progressbar"[^>]*aria-valuenow="40"', html)
    assert "Restoring the disks: 2 s elapsed" in html
    assert f"Task #{running.pk} (revert to snapshot first by olga) is running: wait for it to end." in html
    assert re.search(r"<fieldset disabled", html)
    assert re.search(r'<button type="button" class="small" disabled aria-describedby="busy-reason"[^>]*>Revert</button>', html)
    assert '<noscript><meta http-equiv="refresh"' in html
    response = take(admin, vm, "second", expect=409)
    assert "Another operation is running" in unescape(response.content.decode())
    response = admin.post(f"/vms/{vm.name}/snapshots/first/edit/", {"name": "x2", "description": ""})
    assert response.status_code == 409


def test_buttons_follow_permissions(client, make_user, vm):
    hypervisor.create_snapshot(vm.uuid, "first")
    viewer = make_user("vera", role="viewer", vm=vm)
    client.force_login(viewer)
    html = page(client, vm)
    assert "first" in names_in_tree(html)
    assert "Take snapshot" not in html and ">Revert</a>" not in html and ">Edit</a>" not in html and ">Delete</a>" not in html
    assert take(client, vm, "nope", expect=403).status_code == 403
    assert client.get(f"/vms/{vm.name}/snapshots/first/delete/").status_code == 403
    assert client.post(f"/vms/{vm.name}/snapshots/first/revert/").status_code == 403
    assert Operation.objects.count() == 0
    client.logout()
    operator = make_user("otto", role="operator", vm=vm)
    client.force_login(operator)
    html = page(client, vm)
    assert "Take snapshot" in html and ">Revert</a>" in html
    assert ">Edit</a>" not in html and ">Delete</a>" not in html


def test_invisible_vm_is_404_everywhere(client, make_user, vm):
    hypervisor.create_snapshot(vm.uuid, "first")
    client.force_login(make_user("nobody"))
    assert client.get(f"/vms/{vm.name}/").status_code == 404
    assert take(client, vm, "x", expect=404).status_code == 404
    assert client.get(f"/vms/{vm.name}/snapshots/first/revert/").status_code == 404
    assert client.get(f"/tasks/vm/{vm.uuid}/watch/", HTTP_HX_REQUEST="true").status_code == 404


def test_anonymous_goes_to_login(client, vm):
    response = client.post(f"/vms/{vm.name}/snapshots/", {"name": "x"})
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_login_logout(client, admin_user):
    html = client.get("/login/").content.decode()
    assert '<label for="id_username">Username</label>' in html and '<label for="id_password">Password</label>' in html
    assert ">Log in</button>" in html
    response = client.post("/login/", {"username": "root-admin", "password": "wrong"})
    assert 'role="alert"' in response.content.decode()
    client.post("/login/", {"username": "root-admin", "password": PASSWORD})
    html = client.get("/").content.decode()
    assert "root-admin" in html and ">Log out</button>" in html
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


# ---------------------------------------------------------------------------
# htmx: the same URLs answer with the fragment to swap


def test_htmx_take_answers_with_the_page_part_and_its_progress(admin, vm, monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)  # leave the task queued, as a worker would see it
    monkeypatch.setattr("operations.runner.async_task", lambda *a, **k: None)
    response = admin.post(f"/vms/{vm.name}/snapshots/", {"name": "live"}, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="vm-page"')
    assert "<html" not in html
    op = Operation.objects.get()
    assert re.search(rf'id="task-{op.pk}"[^>]*hx-get="/tasks/{op.pk}/progress/" hx-trigger="every 700ms"', html)
    assert 'role="progressbar"' in html and "Queued, waiting for a worker" in html
    progress = admin.get(f"/tasks/{op.pk}/progress/", HTTP_HX_REQUEST="true")
    assert 'role="progressbar"' in progress.content.decode() and "HX-Trigger" not in progress
    Operation.objects.filter(pk=op.pk).update(status="failed", message="QEMU said no.")
    progress = admin.get(f"/tasks/{op.pk}/progress/", HTTP_HX_REQUEST="true")
    assert "Failed:" in progress.content.decode() and "QEMU said no." in progress.content.decode()
    assert "hx-trigger" not in progress.content.decode()  # polling stops
    assert '"vs-task-ended"' in progress["HX-Trigger"]
    # The page refreshed with the task shows the failure where it was started.
    html = admin.get(f"/vms/{vm.name}/", {"task": op.pk}, **HTMX).content.decode()
    form_end = html.index("</form>")
    assert html.index("QEMU said no.") > form_end and 'role="alert"' in html


def test_htmx_validation_error_swaps_the_form_with_errors(admin, vm):
    response = admin.post(f"/vms/{vm.name}/snapshots/", {"name": "bad name"}, **HTMX)
    assert response.status_code == 400
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="vm-page"') and 'id="name-error"' in html


def test_htmx_edit_in_place(admin, vm):
    take(admin, vm, "first")
    pk = SnapshotRecord.objects.get().pk
    form = admin.get(f"/vms/{vm.name}/snapshots/first/edit/", HTTP_HX_REQUEST="true").content.decode()
    assert form.startswith(f'<li role="treeitem" id="snap-{pk}"') and 'class="edit-form"' in form
    saved = admin.post(
        f"/vms/{vm.name}/snapshots/first/edit/", {"name": "second-name", "description": "d"}, HTTP_HX_REQUEST="true"
    )
    assert saved.status_code == 200
    html = saved.content.decode()
    assert html.startswith(f'<li role="treeitem" id="snap-{pk}"') and ">second-name</span>" in html
    assert 'aria-current="true"' in html and "autofocus" in html
    refused = admin.post(
        f"/vms/{vm.name}/snapshots/second-name/edit/", {"name": "no good", "description": ""}, HTTP_HX_REQUEST="true"
    )
    assert refused.status_code == 400 and 'class="edit-form"' in refused.content.decode()
    cancel = admin.get(f"/vms/{vm.name}/snapshots/second-name/", HTTP_HX_REQUEST="true").content.decode()
    assert cancel.startswith(f'<li role="treeitem" id="snap-{pk}"') and "edit-form" not in cancel


def test_htmx_confirmations_are_dialog_fragments(admin, vm):
    take(admin, vm, "first")
    revert = admin.get(f"/vms/{vm.name}/snapshots/first/revert/", HTTP_HX_REQUEST="true").content.decode()
    assert revert.startswith('<h2 id="dialog-title">') and "<html" not in revert
    assert 'hx-target="#vm-page"' in revert
    Operation.objects.create(kind="snapshot.create", vm_name=vm.name, vm_uuid=vm.uuid, status="running")
    refused = admin.post(f"/vms/{vm.name}/snapshots/first/revert/", HTTP_HX_REQUEST="true")
    assert refused.status_code == 409
    assert refused["HX-Retarget"] == "#dialog-body" and refused["HX-Reswap"] == "innerHTML"
    assert "Another operation is running" in unescape(refused.content.decode())


def test_watch_tells_the_page_when_an_operation_starts_and_ends(admin, vm):
    url = f"/tasks/vm/{vm.uuid}/watch/"
    quiet = admin.get(url, {"shown": 0}, HTTP_HX_REQUEST="true")
    assert quiet.status_code == 204 and "HX-Trigger" not in quiet
    op = Operation.objects.create(kind="snapshot.create", vm_name=vm.name, vm_uuid=vm.uuid, status="running")
    assert "vs-task-started" in admin.get(url, {"shown": 0}, HTTP_HX_REQUEST="true")["HX-Trigger"]
    assert "HX-Trigger" not in admin.get(url, {"shown": op.pk}, HTTP_HX_REQUEST="true")
    Operation.objects.filter(pk=op.pk).update(status="finished")
    assert "vs-task-ended" in admin.get(url, {"shown": op.pk}, HTTP_HX_REQUEST="true")["HX-Trigger"]


# ---------------------------------------------------------------------------
# Tasks pages


def test_task_list_and_detail(admin, vm):
    take(admin, vm, "first")
    op = Operation.objects.get()
    html = admin.get("/tasks/").content.decode()
    assert f'href="/tasks/{op.pk}/"' in html and f'href="/vms/{vm.name}/"' in html
    assert "take snapshot" in html and "✔ finished" in html and "root-admin" in html and "100%" in html
    assert re.search(r"<time datetime=\"[^\"]+\" title=", html)
    assert f"Task #{op.pk}" in admin.get(f"/tasks/{op.pk}/").content.decode()
    failed_only = admin.get("/tasks/", {"status": "failed"}).content.decode()
    assert f'href="/tasks/{op.pk}/"' not in failed_only and "No tasks with this status yet." in failed_only
    assert admin.get(f"/tasks/{op.pk}/progress/")["Location"] == f"/tasks/{op.pk}/"


def test_inventory_links_to_the_vm_page(admin, vm):
    html = admin.get("/").content.decode()
    assert f'href="/vms/{vm.name}/"' in html


# ---------------------------------------------------------------------------
# Speed: what the page costs does not grow with the tree


def make_tree(vm, count: int) -> None:
    """``count`` snapshots: a chain with a branch every 7 (fast: the VM is shut off)."""
    for i in range(count):
        if i and i % 7 == 0:
            hypervisor.revert_snapshot(vm.uuid, f"s{i - 3}")
        hypervisor.create_snapshot(vm.uuid, f"s{i}", f"snapshot {i}")


def measure(client, vm):
    client.get(f"/vms/{vm.name}/")  # the first look records the snapshots made outside the app
    with CaptureQueriesContext(connection) as queries, hypervisor.count_calls() as calls:
        response = client.get(f"/vms/{vm.name}/")
    assert response.status_code == 200
    return len(queries), sum(calls.values()), response.content.decode()


def test_page_cost_is_bounded_whatever_the_tree_size(admin, make_vm):
    small, large = make_vm(), make_vm()
    make_tree(small, 5)
    make_tree(large, 50)
    few_queries, few_calls, few_html = measure(admin, small)
    many_queries, many_calls, many_html = measure(admin, large)
    assert len(names_in_tree(few_html)) == 5 and len(names_in_tree(many_html)) == 50
    assert 3 <= many_queries == few_queries <= 10
    assert 3 <= many_calls == few_calls <= 12


def test_htmx_errors_are_fragments(admin):
    response = admin.get("/vms/no-such-vm-here/", **HTMX)
    assert response.status_code == 404
    html = response.content.decode().strip()
    assert html == '<p class="error" role="alert">There is no VM named &#x27;no-such-vm-here&#x27; that you can see.</p>'
