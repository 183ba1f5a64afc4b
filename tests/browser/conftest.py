"""Playwright against Debian's Chromium (never a downloaded browser), a live server
and a real django-q2 cluster on the test database."""

import os
import time

import pytest

# Playwright's sync API runs an event loop in the test's thread; the ORM calls the
# tests and fixtures make there are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from playwright.sync_api import sync_playwright  # noqa: E402

from operations.models import Operation  # noqa: E402
from tests.conftest import PASSWORD  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport=DESKTOP, locale="en-GB", timezone_id="Europe/Paris")
    context.set_default_timeout(20_000)
    yield context
    context.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    # Remember every progress bar the page ever showed: a fast task may end
    # between two looks, and the test still wants to know what it displayed.
    page.add_init_script(
        """
        window.__bars = [];
        new MutationObserver(() => {
          document.querySelectorAll('[role="progressbar"]').forEach((bar) => {
            window.__bars.push({name: bar.getAttribute("aria-label"), now: bar.getAttribute("aria-valuenow"),
                                text: bar.getAttribute("aria-valuetext"), visible: bar.checkVisibility()});
          });
        }).observe(document, {subtree: true, childList: true, attributes: true});
        """
    )
    return page


def log_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    # The page after the login form (not /login/ itself, which "**/" would match too).
    page.wait_for_url(lambda url: "/login/" not in url)


def wait_operations(vm_uuid: str, timeout: float = 60) -> None:
    """Until no operation is queued or running on the VM (the qcluster runs them)."""
    deadline = time.monotonic() + timeout
    while Operation.objects.filter(vm_uuid=vm_uuid, status__in=Operation.ACTIVE).exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"operations on {vm_uuid} still running after {timeout}s")
        time.sleep(0.1)
    failed = Operation.objects.filter(vm_uuid=vm_uuid, status=Operation.Status.FAILED).first()
    assert failed is None, failed.message
