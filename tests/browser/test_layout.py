"""The layout holds with the longest names the rules allow, at desktop and phone widths;
what a person needs to read (a name, why a button is greyed out, a time) is on screen."""

import pytest
from playwright.sync_api import expect

from core import hypervisor
from operations import audit
from operations.models import Operation
from snapshots.tree import load_tree
from tests.browser.conftest import DESKTOP, PHONE, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_VM = ("vstest-" + "averyveryverylongvirtualmachinename" * 3)[:100]  # the longest allowed, nowhere to break
LONG_SNAPSHOT = "s" + "napshotwithalongname" * 3 + "abc"  # 64


def assert_no_sideways_scroll(page, where: str) -> None:
    scroll, client = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client, f"{where} scrolls sideways: {scroll}px wide in {client}px"


def assert_on_screen(page, locator) -> None:
    box = locator.bounding_box()
    assert box is not None
    assert 0 <= box["x"] and box["x"] + box["width"] <= page.viewport_size["width"], f"off screen: {box}"


@pytest.fixture
def long_vm(make_vm):
    assert len(LONG_VM) == 100 and len(LONG_SNAPSHOT) == 64
    vm = make_vm(name=LONG_VM, running=True)
    hypervisor.create_snapshot(vm.uuid, LONG_SNAPSHOT)
    return vm


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_100_character_vm_name_never_scrolls_sideways(page, live_server, admin_user, long_vm, viewport):
    vm = long_vm
    page.set_viewport_size(viewport)
    log_in(page, admin_user.username)

    page.goto("/")
    link = page.get_by_role("link", name=vm.name, exact=True)
    expect(link).to_have_attribute("title", vm.name)  # the whole name, however it is cut
    assert_no_sideways_scroll(page, "the VM list")
    row = page.get_by_role("row").filter(has=link)
    for action in (f"Shut down {vm.name}", f"Force off {vm.name}"):
        assert_on_screen(page, row.get_by_role("button", name=action).or_(row.get_by_role("link", name=action)))
    assert_on_screen(page, row.get_by_text(LONG_SNAPSHOT[:20]))
    link.focus()  # focused, the name shows whole
    assert_on_screen(page, link)

    page.goto(f"/vms/{vm.name}/")
    expect(page.get_by_role("heading", name=vm.name)).to_be_visible()
    assert_no_sideways_scroll(page, "the VM page")
    assert_on_screen(page, page.get_by_role("heading", name=vm.name))
    # Clone is greyed out on a running VM, and the page says why in words.
    expect(page.get_by_role("button", name="Clone", exact=True)).to_be_disabled()
    expect(page.get_by_text("Shut it down to clone it.")).to_be_visible()

    page.get_by_role("link", name="Force off…").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    assert_no_sideways_scroll(page, "the force-off dialog")
    assert_on_screen(page, page.get_by_role("dialog").get_by_role("button", name=f"Force off {vm.name}"))


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_300_character_name_in_an_error_never_scrolls_sideways(page, live_server, admin_user, vm, viewport):
    hypervisor.create_snapshot(vm.uuid, "taken")
    load_tree(hypervisor.get_vm(vm.uuid))
    page.set_viewport_size(viewport)
    log_in(page, admin_user.username)
    page.goto(f"/vms/{vm.name}/")
    bad = "x" * 299 + "!"
    form = page.get_by_role("region", name="Take a snapshot")
    form.get_by_label("Name").fill(bad)
    form.get_by_role("button", name="Take snapshot").click()
    expect(page.locator("#name-error")).to_contain_text("Invalid snapshot name")
    assert_no_sideways_scroll(page, "the take form's error")

    # The same name in a rename, in place and on the edit page of its own.
    taken = page.get_by_role("treeitem", name="taken", exact=True)
    taken.get_by_role("link", name="Edit taken").click()
    taken.get_by_label("Name").fill(bad)
    taken.get_by_role("button", name="Save").click()
    expect(taken.locator(".field-error")).to_contain_text("Invalid snapshot name")
    assert_no_sideways_scroll(page, "the rename's error")
    page.goto(f"/vms/{vm.name}/snapshots/taken/edit/")
    page.get_by_label("Name").fill(bad)
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".field-error")).to_contain_text("Invalid snapshot name")
    assert_no_sideways_scroll(page, "the edit page's error")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_audit_actions_are_never_broken_mid_word(page, live_server, admin_user, viewport):
    actor = audit.Actor(user=admin_user, ip="127.0.0.1")
    for action in ("snapshot.delete", "snapshot.revert", "vm.power.poweroff", "grant.revoke"):
        audit.record(action, actor=actor, vm_name="vstest-some-vm", snapshot="snap", message="A long message " * 12)
    page.set_viewport_size(viewport)
    log_in(page, admin_user.username)
    page.goto("/audit/")
    codes = page.locator("table.audit td code")
    expect(codes.first).to_be_visible()
    lines = codes.evaluate_all("(els) => els.map((el) => [el.textContent, el.getClientRects().length])")
    assert lines and all(count == 1 for _, count in lines), lines


def test_times_are_never_shown_in_utc_first(page, live_server, admin_user, vm):
    """A task's times appear in the browser's zone (Europe/Paris here) from the first frame:
    no frame ever paints the server's UTC, neither while the task runs nor when it ends."""
    page.add_init_script(
        """
        window.__utc = [];
        const look = () => {
          document.querySelectorAll("time").forEach((el) => {
            if (el.textContent.includes("UTC") && el.checkVisibility({visibilityProperty: true}))
              window.__utc.push(el.textContent);
          });
          requestAnimationFrame(look);
        };
        requestAnimationFrame(look);
        """
    )
    log_in(page, admin_user.username)
    op = Operation.objects.create(
        kind="snapshot.create",
        vm_name=vm.name,
        vm_uuid=vm.uuid,
        snapshot="soon",
        user=admin_user,
        username=admin_user.username,
        status=Operation.Status.RUNNING,
        progress=10,
        message="Saving the disks",
    )
    page.goto(f"/vms/{vm.name}/")
    expect(page.get_by_role("progressbar")).to_be_visible()
    page.wait_for_timeout(1600)  # two refreshes of the progress
    page.goto(f"/tasks/{op.pk}/")
    expect(page.get_by_role("progressbar")).to_be_visible()
    Operation.objects.filter(pk=op.pk).update(status=Operation.Status.FINISHED, progress=100, message="Done.")
    expect(page.locator(".task-live")).to_contain_text("Done.")
    expect(page.get_by_role("progressbar")).to_have_count(0)
    page.wait_for_timeout(300)
    assert page.evaluate("window.__utc") == []
    assert "UTC" not in page.locator(".task-live").inner_text()
