"""Power actions on a guest that answers: the tiny Linux guest (scripts/tiny-guest) obeys
a shutdown and a reboot, through its guest agent or the ACPI power button."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from core import hypervisor, tiny
from tests.conftest import IMAGE_ROOT, virsh, wait_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sync_tasks")]

# Under TCG on a busy machine a boot has taken 18 s; alone it takes about 4 s.
BOOT_TIMEOUT = 120
SHUTOFF_NORMAL = 1  # libvirt's VIR_DOMAIN_SHUTOFF_SHUTDOWN: the guest switched itself off


class Guest:
    """A running tiny guest: its VM, and what its serial console said."""

    def __init__(self, vm: hypervisor.VMInfo, image_dir, *, agent: bool):
        self.name = vm.name
        self.uuid = vm.uuid
        self.has_agent = agent
        self.console = tiny.console_log(image_dir, vm.name)

    def lines(self) -> list[str]:
        return self.console.read_text(errors="replace").splitlines() if self.console.exists() else []

    def boots(self) -> int:
        """How many times it has booted: the count it keeps on its disk, as it last printed it."""
        counts = [int(line.split()[-1]) for line in self.lines() if line.startswith("virtsnap-guest: boot ")]
        return counts[-1] if counts else 0

    def ready(self, boot: int) -> bool:
        """Booted ``boot`` times, its power button handled, and its agent (if any) connected."""
        lines = self.lines()
        marker = f"virtsnap-guest: boot {boot}"
        if marker not in lines or "virtsnap-guest: ready" not in lines[lines.index(marker) :]:
            return False
        return not self.has_agent or tiny.agent_connected(self.uuid)

    def wait(self, condition, what: str, timeout: float = BOOT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                console = "\n".join(self.lines()[-30:])
                raise AssertionError(f"{self.name}: {what} not within {timeout} s. Its console:\n{console}")
            time.sleep(0.1)

    def agent(self, command: str, **arguments) -> dict:
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        return json.loads(virsh("qemu-agent-command", "--timeout", "30", self.name, json.dumps(request)).stdout)


@pytest.fixture(scope="session")
def guest_dir():
    """The tiny guest's kernel and initramfs, built once (then cached across sessions)."""
    return tiny.build_guest(IMAGE_ROOT / "guest")


@pytest.fixture
def make_guest(guest_dir, image_dir):
    """``make_guest(agent=True)`` -> a running Guest, booted once; removed afterwards."""
    made: list[str] = []

    def make(*, agent: bool = True) -> Guest:
        vm = tiny.create_tiny_guest(f"vstest-guest-{secrets.token_hex(4)}", guest_dir, image_dir=image_dir, agent=agent)
        made.append(vm.uuid)
        guest = Guest(vm, image_dir, agent=agent)
        hypervisor.power(vm.uuid, "start")
        guest.wait(lambda: guest.ready(1), "the first boot")
        if agent:
            # Answering, not just connected: else libvirt's first request could time out
            # on a busy machine and fall back to ACPI.
            assert guest.agent("guest-ping") == {"return": {}}
        return guest

    yield make
    for uuid in made:
        tiny.remove_vm(uuid)


@pytest.fixture
def guest_vm(make_guest) -> Guest:
    """A running tiny guest whose agent answers."""
    return make_guest()


def act(api, guest: Guest, action: str, **body) -> dict:
    response = api.post(f"/api/vms/{guest.name}/{action}", body or None, format="json")
    assert response.status_code == 202, response.json()
    task = wait_task(api, response.json()["id"], timeout=BOOT_TIMEOUT)
    assert task["status"] == "finished", task
    return task


def test_shutdown_is_obeyed_by_a_guest_with_an_agent(api, guest_vm):
    task = act(api, guest_vm, "shutdown", timeout=BOOT_TIMEOUT)
    assert task["message"].startswith(f"VM {guest_vm.name} shut down (")
    vm = hypervisor.get_vm(guest_vm.uuid)
    assert (vm.state, vm.state_reason) == ("shutoff", SHUTOFF_NORMAL)
    # libvirt asks the agent first when one is connected: the power button was never pressed.
    assert not any(line.startswith("acpid:") for line in guest_vm.lines())


def test_shutdown_of_a_guest_without_an_agent_presses_the_power_button(api, make_guest):
    guest = make_guest(agent=False)
    task = act(api, guest, "shutdown", timeout=BOOT_TIMEOUT)
    assert task["message"].startswith(f"VM {guest.name} shut down (")
    vm = hypervisor.get_vm(guest.uuid)
    assert (vm.state, vm.state_reason) == ("shutoff", SHUTOFF_NORMAL)
    assert "acpid: PWRF/00000080" in guest.lines()  # busybox acpid saw the ACPI power button


def test_reboot_restarts_the_guest(api, guest_vm):
    task = act(api, guest_vm, "reboot")
    assert task["message"].startswith(f"Asked the guest OS of {guest_vm.name} to reboot")
    guest_vm.wait(lambda: guest_vm.ready(2), "the second boot")
    assert guest_vm.boots() == 2  # counted on its disk: it went through a boot again
    assert hypervisor.vm_state(guest_vm.uuid) == "running"
    assert guest_vm.agent("guest-ping") == {"return": {}}


def test_the_agent_answers_and_freezes_the_guest_filesystem(guest_vm):
    assert guest_vm.agent("guest-ping") == {"return": {}}
    assert virsh("domfsfreeze", guest_vm.name).stdout.strip() == "Froze 1 filesystem(s)"  # /disk
    try:
        assert guest_vm.agent("guest-fsfreeze-status") == {"return": "frozen"}
    finally:
        assert virsh("domfsthaw", guest_vm.name).stdout.strip() == "Thawed 1 filesystem(s)"
    assert guest_vm.agent("guest-fsfreeze-status") == {"return": "thawed"}
