"""The VM page in a real browser: live progress, the tree refreshed in place,
edit in place, confirmations, errors at the field. Real libvirt, real qcluster."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import expect

from core import hypervisor
from operations.audit import Actor
from snapshots import services
from snapshots.tree import load_tree
from tests.browser.conftest import DESKTOP, PHONE, log_in, wait_operations

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"


def item(page, name):
    return page.get_by_role("treeitem", name=name, exact=True)


def level(locator) -> int:
    return int(locator.get_attribute("aria-level"))


def open_vm(page, vm):
    page.get_by_role("link", name=vm.name, exact=True).click()
    page.wait_for_url(f"**/vms/{vm.name}/")
    # Set on this document only: still there after an action means no reload happened.
    page.evaluate("window.__sameDocument = true; window.__vmPath = location.pathname")


def take_form(page):
    return page.get_by_role("region", name="Take a snapshot")


def take(page, name, description=""):
    form = take_form(page)
    form.get_by_label("Name").fill(name)
    form.get_by_label("Description").fill(description)
    form.get_by_role("button", name="Take snapshot").click()


def assert_same_document(page):
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    assert page.evaluate("location.pathname === window.__vmPath"), f"the address changed to {page.url}"


@pytest.mark.e2e  # a real qcluster runs the tasks
def test_snapshot_workflow(page, live_server, qcluster, admin_user, running_vm):
    vm = running_vm
    log_in(page, admin_user.username)
    expect(page.get_by_role("banner")).to_contain_text(admin_user.username)
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    open_vm(page, vm)
    expect(page.get_by_text("No snapshots yet.")).to_be_visible()
    expect(page.get_by_text("includes its memory")).to_be_visible()

    # Take a snapshot: its progress bar, then the tree, without a reload.
    take(page, "first", "Clean install")
    # Seen on screen: the init script records every progress bar at each DOM change,
    # so a fast task cannot slip between two looks of the test.
    page.wait_for_function("window.__bars.some((bar) => bar.visible && bar.name.includes('take snapshot first'))")
    expect(item(page, "first")).to_be_visible()
    expect(page.get_by_role("progressbar")).to_have_count(0)
    expect(page.locator(".task")).to_be_focused()  # focus followed the task to its end
    expect(page.locator(".task")).to_contain_text("Snapshot first taken (with memory).")
    bars = page.evaluate("window.__bars")
    assert bars and all(re.fullmatch(r"\d+", bar["now"]) for bar in bars)
    assert any("take snapshot first" in bar["name"] for bar in bars)
    assert all(bar["text"] for bar in bars)
    first = item(page, "first")
    expect(first).to_have_attribute("aria-current", "true")
    expect(first).to_contain_text("Clean install")
    expect(first).to_contain_text("with memory")
    expect(page.get_by_role("tree")).to_have_count(1)
    assert_same_document(page)

    # A second one: nested under the first (deeper, indented) and now current.
    take(page, "second", "Packages installed")
    second = item(page, "second")
    expect(second).to_have_attribute("aria-current", "true")
    expect(item(page, "first")).not_to_have_attribute("aria-current", "true")
    expect(item(page, "first")).to_have_attribute("aria-expanded", "true")
    assert level(second) == level(item(page, "first")) + 1
    first_box = page.locator(".node-name", has_text="first").bounding_box()
    second_box = page.locator(".node-name", has_text="second").bounding_box()
    assert second_box["x"] > first_box["x"] and second_box["y"] > first_box["y"]
    expect(second.locator(".here")).to_have_text(re.compile("you are here"))
    assert_same_document(page)

    # Collapse the branch and open it again (JS-only enhancement).
    toggle = item(page, "first").get_by_role("button", name=re.compile("^Collapse first"))
    toggle.click()
    expect(item(page, "first")).to_have_attribute("aria-expanded", "false")
    expect(second).to_be_hidden()
    item(page, "first").get_by_role("button", name=re.compile("^Expand first")).click()
    expect(second).to_be_visible()

    # Rename in place.
    second.get_by_role("link", name="Edit second").click()
    name_field = second.get_by_label("Name")
    expect(name_field).to_be_focused()
    name_field.fill("second-renamed")
    second.get_by_label("Description").fill("Renamed in place")
    second.get_by_role("button", name="Save").click()
    renamed = item(page, "second-renamed")
    expect(renamed).to_contain_text("Renamed in place")
    expect(renamed).to_have_attribute("aria-current", "true")
    expect(item(page, "second")).to_have_count(0)
    expect(page.get_by_role("status").first).to_contain_text("Snapshot second saved as second-renamed.")
    expect(renamed.get_by_role("link", name="Edit second-renamed")).to_be_focused()
    assert_same_document(page)

    # Revert: a confirmation that says what is lost, then the marker moves.
    item(page, "first").get_by_role("link", name="Revert to first").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("present state is discarded")
    expect(dialog.get_by_role("link", name="Cancel")).to_be_focused()
    dialog.get_by_role("link", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(renamed).to_have_attribute("aria-current", "true")
    item(page, "first").get_by_role("link", name="Revert to first").click()
    dialog.get_by_role("button", name="Revert to first").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(item(page, "first")).to_have_attribute("aria-current", "true")
    expect(item(page, "second-renamed")).not_to_have_attribute("aria-current", "true")
    expect(item(page, "first").locator(".task")).to_contain_text("Reverted")
    expect(page.locator(".vm-header")).to_contain_text("running")
    assert_same_document(page)

    # A third snapshot branches from first: first now has two children.
    take(page, "third")
    expect(item(page, "third")).to_have_attribute("aria-current", "true")
    assert level(item(page, "third")) == level(item(page, "first")) + 1

    # Delete with its children: the choice lists what goes.
    item(page, "first").get_by_role("link", name="Delete first").click()
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Only this snapshot")).to_be_visible()
    doomed = dialog.get_by_role("list", name="Deleted with first")
    expect(doomed).to_contain_text("second-renamed")
    expect(doomed).to_contain_text("third")
    dialog.get_by_role("button", name="With its 2 descendants").click()
    expect(page.get_by_text("No snapshots yet.")).to_be_visible()
    expect(page.locator(".task")).to_contain_text("Snapshot first and its 2 descendants deleted.")
    assert hypervisor.snapshot_names(vm.uuid) == ([], "")
    assert_same_document(page)


@pytest.mark.e2e  # a real qcluster runs the tasks
def test_validation_errors_show_at_the_field(page, live_server, qcluster, admin_user, vm):
    hypervisor.create_snapshot(vm.uuid, "taken")
    log_in(page, admin_user.username)
    open_vm(page, vm)
    take(page, "bad name!", "my words")
    name_field = take_form(page).get_by_label("Name")
    expect(name_field).to_have_attribute("aria-invalid", "true")
    expect(name_field).to_have_value("bad name!")
    expect(name_field).to_have_accessible_description(re.compile("Invalid snapshot name 'bad name!'"))
    expect(take_form(page).get_by_label("Description")).to_have_value("my words")
    expect(page.locator("#name-error")).to_be_visible()

    take(page, "taken", "again")
    expect(name_field).to_have_accessible_description(re.compile("already has a snapshot named 'taken'"))
    expect(name_field).to_have_value("taken")

    # In place too: a rename to a taken name keeps the form open with the reason.
    take(page, "other")
    other = item(page, "other")
    other.get_by_role("link", name="Edit other").click()
    other.get_by_label("Name").fill("taken")
    other.get_by_role("button", name="Save").click()
    expect(other.get_by_label("Name")).to_have_accessible_description(re.compile("already has a snapshot named 'taken'"))
    other.get_by_label("Name").press("Escape")  # same as Cancel
    expect(item(page, "other").get_by_role("link", name="Edit other")).to_be_visible()
    assert_same_document(page)


@pytest.mark.e2e  # a real qcluster runs the tasks
def test_works_without_javascript(browser, live_server, qcluster, admin_user, vm):
    context = browser.new_context(base_url=live_server.url, viewport=DESKTOP, java_script_enabled=False)
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        log_in(page, admin_user.username)
        open_vm(page, vm)
        take(page, "nojs", "No JavaScript")
        page.wait_for_url(re.compile(r"\?task=\d+"))
        expect(page.get_by_role("status").first).to_contain_text("Taking snapshot nojs")
        wait_operations(vm.uuid)
        page.reload()
        expect(item(page, "nojs")).to_have_attribute("aria-current", "true")
        item(page, "nojs").get_by_role("link", name="Delete nojs").click()
        page.wait_for_url("**/snapshots/nojs/delete/")
        page.get_by_role("button", name="Delete nojs").click()
        wait_operations(vm.uuid)
        page.reload()
        expect(page.get_by_text("No snapshots yet.")).to_be_visible()
    finally:
        context.close()


@pytest.mark.e2e  # a real qcluster runs the tasks
def test_screenshots(page, live_server, qcluster, admin_user, vm):
    """The VM page at desktop and phone widths, for the README (docs/screenshots/)."""
    actor = Actor(user=admin_user, ip="127.0.0.1")

    def take_now(name, description):
        services.request_create(actor, vm.name, name, description)
        wait_operations(vm.uuid)

    def revert_now(name):
        services.request_revert(actor, vm.name, name)
        wait_operations(vm.uuid)

    take_now("installed", "Fresh Debian 12 install, nothing configured yet")
    take_now("configured", "Users, SSH keys, monitoring agent")
    hypervisor.power(vm.uuid, "start")
    take_now("before-upgrade", "Before apt full-upgrade; services checked")
    take_now("upgraded", "After the upgrade: all green")
    revert_now("before-upgrade")
    take_now("kernel-6.12", "Trying the backports kernel")
    revert_now("configured")
    take_now("db-tuning", "PostgreSQL shared_buffers experiment")
    revert_now("kernel-6.12")

    log_in(page, admin_user.username)
    open_vm(page, vm)
    expect(item(page, "kernel-6.12")).to_have_attribute("aria-current", "true")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "vm-page-desktop.png")
    page.set_viewport_size(PHONE)
    page.reload()
    expect(item(page, "kernel-6.12")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px)"
    page.screenshot(path=SCREENSHOTS / "vm-page-phone.png", full_page=True)


def test_an_operation_started_elsewhere_shows_up_live(page, live_server, admin_user, make_user, vm):
    """Another user's task appears on an open page with its progress, blocks the
    conflicting buttons with the reason, and its end refreshes the page."""
    from operations.models import Operation
    from snapshots.models import SnapshotRecord

    hypervisor.create_snapshot(vm.uuid, "base")
    log_in(page, admin_user.username)
    open_vm(page, vm)
    expect(item(page, "base").get_by_role("link", name="Revert to base")).to_be_visible()
    olga = make_user("olga", role="owner", vm=vm)
    op = Operation.objects.create(
        kind="snapshot.revert",
        vm_name=vm.name,
        vm_uuid=vm.uuid,
        snapshot="base",
        params={"record": SnapshotRecord.objects.get(libvirt_name="base").pk},
        user=olga,
        username="olga",
        status=Operation.Status.RUNNING,
        progress=30,
        message="Restoring the disks: 1 s elapsed",
    )
    # The page looks every 4 s; the test has it look now instead of waiting for the timer.
    page.dispatch_event("#task-watch", "vs-look")
    bar = item(page, "base").get_by_role("progressbar")
    expect(bar).to_be_visible()
    expect(bar).to_have_attribute("aria-valuenow", "30")
    expect(page.locator("#busy-reason")).to_contain_text(f"Task #{op.pk} (revert to snapshot base by olga) is running")
    expect(item(page, "base").get_by_role("button", name="Revert")).to_be_disabled()
    expect(take_form(page).get_by_role("button", name="Take snapshot")).to_be_disabled()
    Operation.objects.filter(pk=op.pk).update(progress=80, message="Restoring the disks: 3 s elapsed")
    expect(bar).to_have_attribute("aria-valuenow", "80")
    expect(item(page, "base")).to_contain_text("3 s elapsed")
    Operation.objects.filter(pk=op.pk).update(status=Operation.Status.FAILED, message="QEMU could not load the snapshot.")
    expect(item(page, "base").get_by_role("alert")).to_contain_text("Failed: QEMU could not load the snapshot.")
    expect(item(page, "base").get_by_role("link", name="Revert to base")).to_be_visible()
    expect(page.locator("#busy-reason")).to_have_count(0)
    assert_same_document(page)


def test_tree_keyboard_and_local_time(page, live_server, admin_user, vm):
    def take(name):
        hypervisor.create_snapshot(vm.uuid, name)
        # The app sees each one as it comes: siblings taken in the same second (libvirt's
        # resolution) keep that order, whatever order libvirt lists them in.
        load_tree(hypervisor.get_vm(vm.uuid))

    for name in ("one", "two", "three"):
        take(name)
    hypervisor.revert_snapshot(vm.uuid, "one")
    take("side")
    log_in(page, admin_user.username)
    open_vm(page, vm)
    # Tab reaches the tree at "you are here"; arrows move through the items.
    side = item(page, "side")
    expect(side).to_have_attribute("tabindex", "0")
    side.focus()
    page.keyboard.press("ArrowUp")
    expect(item(page, "three")).to_be_focused()
    page.keyboard.press("Home")
    expect(item(page, "one")).to_be_focused()
    page.keyboard.press("ArrowLeft")  # collapse "one"
    expect(item(page, "one")).to_have_attribute("aria-expanded", "false")
    expect(item(page, "two")).to_be_hidden()
    page.keyboard.press("ArrowRight")
    expect(item(page, "two")).to_be_visible()
    page.keyboard.press("ArrowRight")
    expect(item(page, "two")).to_be_focused()
    page.keyboard.press("End")
    expect(side).to_be_focused()
    page.keyboard.press("ArrowLeft")  # a leaf: go to its parent
    expect(item(page, "one")).to_be_focused()
    # Collapsed branches stay collapsed after a refresh of the page.
    page.keyboard.press("ArrowLeft")
    page.reload()
    expect(item(page, "one")).to_have_attribute("aria-expanded", "false")
    expect(item(page, "two")).to_be_hidden()
    # Times in the browser's zone (the context runs in Europe/Paris), ISO on hover.
    time_el = item(page, "one").locator("time")
    iso = time_el.get_attribute("datetime")
    assert iso.endswith("+00:00") and time_el.get_attribute("title") == iso
    assert "UTC" not in time_el.inner_text()


def test_a_deep_chain_never_scrolls_sideways(page, live_server, admin_user, vm):
    """40 snapshots in one chain: indentation stops growing, items say their level."""
    for i in range(40):
        hypervisor.create_snapshot(vm.uuid, f"deep-{i:02d}-with-a-rather-long-name")
    log_in(page, admin_user.username)
    for viewport in (PHONE, DESKTOP):
        page.set_viewport_size(viewport)
        open_vm(page, vm)
        last = item(page, "deep-39-with-a-rather-long-name")
        expect(last).to_have_attribute("aria-level", "40")
        expect(last).to_contain_text("level 40")
        expect(last).to_have_attribute("aria-current", "true")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], f"{width}px wide at {viewport['width']}px"
        box = last.locator(".node-name").bounding_box()
        assert box["x"] + box["width"] <= viewport["width"]
        page.goto("/")
    # Collapsing the root hides the 39 below it.
    open_vm(page, vm)
    item(page, "deep-00-with-a-rather-long-name").get_by_role("button", name=re.compile("^Collapse")).click()
    expect(page.locator('[role="treeitem"]')).to_have_count(40)
    expect(page.locator('[role="treeitem"]:visible')).to_have_count(1)
    page.get_by_role("link", name="Jump to “you are here”").click()
    expect(item(page, "deep-39-with-a-rather-long-name")).to_be_focused()
    expect(page.locator('[role="treeitem"]:visible')).to_have_count(40)
