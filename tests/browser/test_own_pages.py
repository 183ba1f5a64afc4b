"""Confirmations reached by their own URL (a new tab, a bookmark, the VM list) work as
plain form posts in a browser with JavaScript, as they do in the VM page's dialog."""

import re

import pytest
from playwright.sync_api import expect

from core import hypervisor
from core.tiny import remove_vm
from tests.browser.conftest import log_in, wait_operations

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,  # a real qcluster runs the tasks
    pytest.mark.django_db(transaction=True),
]


def item(page, name):
    return page.get_by_role("treeitem", name=name, exact=True)


@pytest.fixture
def console_errors(page):
    """Console errors the pages logged (htmx:targetError among them)."""
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


def test_force_off_from_the_vm_list(page, live_server, qcluster, admin_user, running_vm, console_errors):
    vm = running_vm
    log_in(page, admin_user.username)
    page.goto("/")
    page.get_by_role("link", name=f"Force off {vm.name}").click()
    page.wait_for_url(re.compile(rf"/vms/{vm.name}/power/poweroff/\?next=/$"))
    page.get_by_role("button", name=f"Force off {vm.name}").click()
    page.wait_for_url(re.compile(r"/$"))  # back where it came from
    expect(page.get_by_role("status").first).to_contain_text(f"Force off {vm.name}: task #")
    wait_operations(vm.uuid)
    assert hypervisor.get_vm(vm.uuid).state == "shutoff"
    assert not console_errors, console_errors


def test_revert_edit_and_delete_on_their_own_pages(page, live_server, qcluster, admin_user, vm, console_errors):
    hypervisor.create_snapshot(vm.uuid, "one")
    hypervisor.create_snapshot(vm.uuid, "two")
    log_in(page, admin_user.username)
    base = f"/vms/{vm.name}/snapshots"

    # Revert, from the revert link opened as its own page.
    page.goto(f"/vms/{vm.name}/")
    revert_url = item(page, "one").get_by_role("link", name="Revert to one").get_attribute("href")
    page.goto(revert_url)
    page.get_by_role("button", name="Revert to one").click()
    page.wait_for_url(re.compile(rf"/vms/{vm.name}/\?task=\d+"))
    wait_operations(vm.uuid)
    page.reload()
    expect(item(page, "one")).to_have_attribute("aria-current", "true")

    # Edit: Cancel goes back to the VM page, Save renames.
    page.goto(f"{base}/two/edit/")
    page.get_by_role("link", name="Cancel").click()
    page.wait_for_url(re.compile(rf"/vms/{vm.name}/#snap-\d+$"))
    page.goto(f"{base}/two/edit/")
    page.get_by_label("Name").fill("two-renamed")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(rf"/vms/{vm.name}/#snap-\d+$"))
    expect(item(page, "two-renamed")).to_be_visible()

    # Delete.
    page.goto(f"{base}/two-renamed/delete/")
    page.get_by_role("button", name="Delete two-renamed").click()
    page.wait_for_url(re.compile(rf"/vms/{vm.name}/\?task=\d+"))
    wait_operations(vm.uuid)
    page.reload()
    expect(item(page, "one")).to_be_visible()
    expect(item(page, "two-renamed")).to_have_count(0)
    assert not console_errors, console_errors


def test_clone_and_delete_a_vm_on_their_own_pages(page, live_server, qcluster, admin_user, make_vm, console_errors):
    source, doomed = make_vm(), make_vm()
    clone_name = f"{source.name}-copy"
    log_in(page, admin_user.username)
    try:
        page.goto(f"/vms/{source.name}/clone/")
        page.get_by_label("Name of the clone").fill(clone_name)
        page.get_by_role("button", name=f"Clone {source.name}").click()
        page.wait_for_url(re.compile(rf"/vms/{source.name}/\?task=\d+"))
        wait_operations(source.uuid)
        assert hypervisor.vm_exists(clone_name)
    finally:
        if hypervisor.vm_exists(clone_name):
            remove_vm(clone_name)

    page.goto(f"/vms/{doomed.name}/delete/")
    page.get_by_label("Type").fill(doomed.name)
    page.get_by_role("button", name=f"Delete {doomed.name}").click()
    page.wait_for_url(re.compile(r"/tasks/\d+/$"))
    wait_operations(doomed.uuid)
    assert not hypervisor.vm_exists(doomed.uuid)
    assert not console_errors, console_errors


def test_the_dialog_on_the_vm_page_still_posts_in_place(page, live_server, qcluster, admin_user, running_vm):
    vm = running_vm
    log_in(page, admin_user.username)
    page.goto(f"/vms/{vm.name}/")
    page.evaluate("window.__sameDocument = true")
    page.get_by_role("link", name="Force off…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name=f"Force off {vm.name}").click()
    expect(dialog).to_be_hidden()
    expect(page.locator(".vm-header")).to_contain_text("shut off")
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    wait_operations(vm.uuid)
