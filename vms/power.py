"""Power actions — start, shut down, force off, reboot, pause, resume — one path each:
when an action makes sense (and why not), the request, the worker, the settling."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import quote

from django.conf import settings

from access import policy
from core import hypervisor
from core.errors import Conflict, Failed, Invalid
from operations import runner
from operations.audit import Actor, attempt
from operations.models import Operation


def vm_uri(name: str) -> str:
    return f"/api/vms/{quote(name)}"


@dataclass(frozen=True)
class PowerAction:
    name: str
    button: str  # on the page: "Force off"
    label: str  # in task lists: "force off VM"
    allowed: tuple[str, ...]  # libvirt states in which the action makes sense
    result: str  # the state it leads to
    help: str  # the API's description


POWER_ACTIONS = {
    action.name: action
    for action in (
        PowerAction("start", "Start", "start VM", ("shutoff",), "running", "Start a shut-off VM. 409 if it is not shut off."),
        PowerAction(
            "shutdown",
            "Shut down",
            "shut down VM",
            ("running", "blocked"),
            "shutoff",
            "Ask the guest OS to shut down (through its guest agent when one answers, else the ACPI power button) and "
            "wait up to `timeout` seconds; the task fails with the reason if it does not (force it off then). 409 if "
            "the VM is not running.",
        ),
        PowerAction(
            "poweroff",
            "Force off",
            "force off VM",
            ("running", "blocked", "paused", "shutdown", "crashed", "pmsuspended", "nostate"),
            "shutoff",
            "Force the VM off at once (like pulling the plug). 409 if it is shut off.",
        ),
        PowerAction(
            "reboot",
            "Reboot",
            "reboot VM",
            ("running", "blocked"),
            "running",
            "Ask the guest OS to reboot (through its guest agent when one answers, else ACPI). 409 if the VM is not running.",
        ),
        PowerAction(
            "suspend",
            "Pause",
            "pause VM",
            ("running", "blocked"),
            "paused",
            "Pause the VM (its vCPUs stop; memory is kept). 409 if it is not running.",
        ),
        PowerAction("resume", "Resume", "resume VM", ("paused",), "running", "Resume a paused VM. 409 if it is not paused."),
    )
}

# Why an action makes no sense in a state: (action, state) -> reason; "*" for any other state.
_REFUSALS = {
    ("start", "paused"): "VM {vm} is paused, not shut off: resume it instead.",
    ("start", "crashed"): "VM {vm} has crashed: force it off first, then start it.",
    ("start", "pmsuspended"): "VM {vm} was suspended by its guest OS: force it off first, then start it.",
    ("start", "shutdown"): "VM {vm} is shutting down: wait until it is shut off, then start it.",
    ("start", "*"): "VM {vm} is already running.",
    ("shutdown", "shutoff"): "VM {vm} is already shut off.",
    ("shutdown", "paused"): "VM {vm} is paused: a paused guest cannot answer a shutdown request. Resume it, or force it off.",
    ("shutdown", "shutdown"): "VM {vm} is already shutting down: wait, or force it off.",
    ("shutdown", "*"): "VM {vm} is {state}: its guest OS cannot shut down now; force it off instead.",
    ("poweroff", "*"): "VM {vm} is already shut off.",
    ("reboot", "shutoff"): "VM {vm} is shut off: start it instead.",
    ("reboot", "paused"): "VM {vm} is paused: resume it first.",
    ("reboot", "*"): "VM {vm} is {state}: its guest OS cannot reboot now.",
    ("suspend", "paused"): "VM {vm} is already paused.",
    ("suspend", "shutoff"): "VM {vm} is shut off: there is nothing to pause.",
    ("suspend", "*"): "VM {vm} is {state}: only a running VM can be paused.",
    ("resume", "shutoff"): "VM {vm} is shut off: start it instead.",
    ("resume", "running"): "VM {vm} is running, not paused.",
    ("resume", "blocked"): "VM {vm} is running, not paused.",
    ("resume", "*"): "VM {vm} is {state}, not paused.",
}


def power_refusal(action: str, vm: hypervisor.VMInfo) -> str | None:
    """Why ``action`` makes no sense for ``vm`` as it is now, or None if it does."""
    if action == "resume" and vm.state == "paused" and vm.busy_with_snapshot:
        return f"VM {vm.name} is paused while QEMU saves or loads a snapshot: it carries on by itself when that ends."
    if vm.state in POWER_ACTIONS[action].allowed:
        return None
    template = _REFUSALS.get((action, vm.state)) or _REFUSALS[(action, "*")]
    return template.format(vm=vm.name, state=vm.state)


def shutdown_timeout() -> int:
    """Seconds a shutdown waits for the guest OS (SHUTDOWN_TIMEOUT, default 60)."""
    return settings.SHUTDOWN_TIMEOUT


def max_shutdown_timeout() -> int:
    # The wait must end well before django-q2 kills the task.
    return max(10, settings.TASK_TIMEOUT - 60)


def validate_timeout(timeout) -> int:
    if timeout is None:
        return shutdown_timeout()
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= max_shutdown_timeout():
        raise Invalid(f"The shutdown timeout must be a whole number of seconds from 1 to {max_shutdown_timeout()}.")
    return timeout


def request_power(actor: Actor, vm_name: str, action: str, *, timeout: int | None = None) -> Operation:
    """Queue a power action (``start``, ``shutdown``, ``poweroff``, ``reboot``, ``suspend``, ``resume``)."""
    with attempt(f"vm.{action}", actor, vm_name, params={"timeout": timeout} if timeout is not None else None):
        if action not in POWER_ACTIONS:
            raise Invalid(f"Unknown power action {action!r}: use {', '.join(POWER_ACTIONS)}.")
        vm = policy.get_vm(actor.user, vm_name, "power", snapshots=False)
        refusal = power_refusal(action, vm)
        if refusal:
            raise Conflict(refusal)
        params = {"action": action, "vm_state": vm.state}
        if action == "shutdown":
            params["timeout"] = validate_timeout(timeout)
        return runner.submit(f"vm.{action}", vm, actor=actor, params=params, target_uri=vm_uri(vm.name))


def _run_power(op: Operation, progress: runner.Progress) -> str:
    action = op.params["action"]
    vm = runner.task_vm(op, "power", snapshots=False)
    refusal = power_refusal(action, vm)
    if refusal:
        raise Conflict(f"{refusal} Nothing was done: the VM changed after the request.")
    if action == "shutdown":
        return _shutdown(vm, op.params.get("timeout") or shutdown_timeout(), progress)
    progress(10, {"start": "Starting", "poweroff": "Forcing off", "reboot": "Asking the guest OS to reboot"}.get(action, action))
    hypervisor.power(vm.uuid, action)
    state = hypervisor.vm_state(vm.uuid)
    if action == "reboot":
        return (
            f"Asked the guest OS of {vm.name} to reboot (guest agent, else ACPI); it restarts by itself. A guest without "
            "an OS, or with neither a guest agent nor ACPI support, ignores the request: force it off, then start it."
        )
    done = {"start": "started", "poweroff": "forced off", "suspend": "paused", "resume": "resumed"}[action]
    return f"VM {vm.name} {done}; it is {state}."


def _shutdown(vm: hypervisor.VMInfo, timeout: int, progress: runner.Progress) -> str:
    progress(0, f"Asking the guest OS of {vm.name} to shut down (guest agent, else ACPI)")
    hypervisor.power(vm.uuid, "shutdown")
    began = time.monotonic()
    while True:
        state = hypervisor.vm_state(vm.uuid)
        elapsed = time.monotonic() - began
        if state == "shutoff":
            return f"VM {vm.name} shut down ({elapsed:.0f} s)."
        if elapsed >= timeout:
            raise Failed(
                f"VM {vm.name} did not shut down within {timeout} s of the request (it is {state}): its guest OS "
                "ignored the request or is still busy; a VM without an OS, or with neither a guest agent nor ACPI "
                "support, never answers. "
                "Try again with a longer timeout, or force it off (like pulling the plug: unsaved data in the guest is lost)."
            )
        progress(int(100 * elapsed / timeout), f"Waiting for the guest OS to shut down: {elapsed:.0f} s of {timeout} s")
        time.sleep(min(0.5, max(0.05, timeout - elapsed)))


def _settle_power(op: Operation) -> tuple[bool, str]:
    """Finished only when libvirt proves it: the VM is in the state the action leads to
    and was not before. A reboot leaves a VM running as it was: that proves nothing."""
    action = POWER_ACTIONS[op.params["action"]]
    state = hypervisor.vm_state(op.vm_uuid)
    if state != action.result:
        return False, f"libvirt shows the VM {state}: the {action.label} did not complete."
    if op.params.get("vm_state") in (None, action.result):
        return False, f"libvirt shows the VM {state}, as it was before: the {action.label} may or may not have happened."
    return True, f"libvirt shows the VM {state} (it was {op.params['vm_state']}): the {action.label} took effect."


for _action in POWER_ACTIONS.values():
    runner.register(f"vm.{_action.name}", label=_action.label, settle=_settle_power)(_run_power)
