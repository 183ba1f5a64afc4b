"""Pages as a person reaches them by any path: confirmations opened on their own, unknown
addresses, links to VMs that are gone, and the name rules said where names are typed."""

import re
from html import escape, unescape

import pytest

from core import hypervisor
from core.names import SNAPSHOT_NAME, VM_NAME
from core.tiny import remove_vm
from operations.models import Operation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sync_tasks")]


@pytest.fixture
def admin(client, admin_user):
    client.force_login(admin_user)
    return client


def hx_targets(html: str) -> set[str]:
    return set(re.findall(r'hx-target="(#[^"]+)"', html))


def ids(html: str) -> set[str]:
    return {f"#{i}" for i in re.findall(r'\bid="([^"]+)"', html)}


# ---------------------------------------------------------------------------
# Confirmations on pages of their own


def test_confirmation_pages_target_nothing_they_lack(admin, make_vm):
    """On its own page a confirmation is a plain form: no hx-target naming an element
    the page does not have (htmx would refuse to send it: htmx:targetError)."""
    vm, running = make_vm(), make_vm(running=True)
    hypervisor.create_snapshot(vm.uuid, "one")
    urls = [
        f"/vms/{vm.name}/snapshots/one/revert/",
        f"/vms/{vm.name}/snapshots/one/delete/",
        f"/vms/{vm.name}/snapshots/one/edit/",
        f"/vms/{vm.name}/clone/",
        f"/vms/{vm.name}/delete/",
        f"/vms/{running.name}/power/poweroff/?next=/",
        f"/vms/{running.name}/power/shutdown/",
    ]
    for url in urls:
        response = admin.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert 'method="post"' in html
        assert hx_targets(html) <= ids(html), (url, hx_targets(html) - ids(html))


def test_the_same_confirmations_in_the_dialog_still_post_in_place(admin, vm):
    hypervisor.create_snapshot(vm.uuid, "one")
    for url in (f"/vms/{vm.name}/snapshots/one/revert/", f"/vms/{vm.name}/clone/"):
        html = admin.get(url, HTTP_HX_REQUEST="true").content.decode()
        assert 'hx-target="#vm-page"' in html
    edit = admin.get(f"/vms/{vm.name}/snapshots/one/edit/", HTTP_HX_REQUEST="true").content.decode()
    assert re.search(r'hx-post="[^"]+" hx-target="#snap-\d+"', edit)


# ---------------------------------------------------------------------------
# Unknown addresses


def test_unknown_pages_get_the_apps_404_page(client, admin):
    for who in (client, admin):
        response = who.get("/no/such/page/")
        assert response.status_code == 404
        assert "error.html" in [t.name for t in response.templates]
        html = response.content.decode()
        assert "<h1>Not found</h1>" in html and "There is no page at /no/such/page/" in html
        assert 'rel="icon" href="/static/favicon.svg"' in html
    # The API keeps answering JSON.
    api = admin.get("/api/no-such-thing")
    assert api.status_code == 404 and api.json()["code"] == 404


def test_favicon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/favicon.svg"
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon["Content-Type"].startswith("image/svg+xml")


# ---------------------------------------------------------------------------
# Links to VMs that are gone


def test_task_pages_link_a_gone_vm_to_its_history(admin, make_vm):
    kept, gone = make_vm(), make_vm()
    for vm in (kept, gone):
        assert admin.post(f"/vms/{vm.name}/snapshots/", {"name": "first"}).status_code == 302
    remove_vm(gone.uuid)  # deleted outside the app
    kept_task = Operation.objects.get(vm_uuid=kept.uuid)
    gone_task = Operation.objects.get(vm_uuid=gone.uuid)

    tasks = admin.get("/tasks/").content.decode()
    assert f'href="/vms/{kept.name}/"' in tasks
    assert f'href="/vms/{gone.name}/history"' in tasks and f'href="/vms/{gone.name}/"' not in tasks
    detail = admin.get(f"/tasks/{gone_task.pk}/").content.decode()
    assert f'href="/vms/{gone.name}/history"' in detail and f'href="/vms/{gone.name}/"' not in detail
    assert "no longer in libvirt" in detail
    assert f'href="/vms/{kept.name}/"' in admin.get(f"/tasks/{kept_task.pk}/").content.decode()
    # Where the link goes, the VM's history answers.
    history = admin.get(f"/vms/{gone.name}/history")
    assert history.status_code == 200 and "no longer exists in libvirt" in history.content.decode()


# ---------------------------------------------------------------------------
# The rules, said where names are typed


def help_text(html: str, help_id: str) -> str:
    found = re.search(rf'<p class="help" id="{help_id}">(.*?)</p>', html, re.S)
    assert found, help_id
    return unescape(re.sub(r"<[^>]+>", "", found.group(1)))


def test_name_help_says_the_rule_the_error_enforces(admin, vm):
    hypervisor.create_snapshot(vm.uuid, "one")
    page = admin.get(f"/vms/{vm.name}/").content.decode()
    assert SNAPSHOT_NAME.text in help_text(page, "name-help")
    refused = admin.post(f"/vms/{vm.name}/snapshots/", {"name": "current"}).content.decode()
    assert f"use {escape(SNAPSHOT_NAME.text)}." in refused  # the error, in the same words
    edit = admin.get(f"/vms/{vm.name}/snapshots/one/edit/").content.decode()
    assert SNAPSHOT_NAME.text in help_text(edit, r"edit-\d+-name-help")
    clone = admin.get(f"/vms/{vm.name}/clone/").content.decode()
    assert VM_NAME.text in help_text(clone, "clone-name-help")
