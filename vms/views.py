"""The VM pages: the inventory, the VM page (drawn by snapshots.views), and the power,
delete and clone actions with their confirmations."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from access import policy
from core import hypervisor
from core.errors import AppError, NotFound, in_place
from core.names import VM_NAME
from operations.audit import Actor
from operations.models import Operation
from snapshots import views as snapshot_views
from vms import clone, inventory, power, removal


@login_required
def vm_list(request):
    vms = inventory.inventory(request.user)
    perms = policy.access_for(request.user)
    busy = {op.vm_uuid: op for op in Operation.objects.active().filter(vm_uuid__in=[vm.uuid for vm, _ in vms])}
    rows = [(vm, current, perms.perms(vm.uuid), busy.get(vm.uuid)) for vm, current in vms]
    return render(request, "vms/list.html", {"rows": rows})


@login_required
def vm_detail(request, name: str):
    """The VM page: header, live operation, snapshot tree (see snapshots.views)."""
    return snapshot_views.vm_page(request, name)


# ---------------------------------------------------------------------------
# VM lifecycle: power, delete, clone (vms.lifecycle does the work)
#
# Without JavaScript: POST, redirect, GET with a flash message; a GET of an action's
# URL is its confirmation page. With htmx, the header's buttons swap the whole VM
# page, and confirmations open in the page's dialog. A refusal (409, 400) shows where
# the request came from: in the confirmation, or as a message on the page.


def _came_from(request: HttpRequest) -> str:
    """The page a form came from (``next``, this site only), or ""."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return ""


def _next_url(request: HttpRequest, vm_name: str, task: int | None = None) -> str:
    """Where to go back to: the page the form came from, else the VM page (with the task's progress)."""
    if _came_from(request):
        return _came_from(request)
    url = reverse("vm-detail", args=[vm_name])
    return f"{url}?task={task}" if task else url


def _back_to_page(request: HttpRequest, vm_name: str, op: Operation | None = None, status: int = 200) -> HttpResponse:
    """The VM page again (only its live part for htmx), where the flash message shows."""
    if request.htmx and not request.POST.get("next"):
        vm = policy.get_vm(request.user, vm_name, snapshots=False)
        context = snapshot_views.page_context(request, vm, task=op.pk if op else None)
        return snapshot_views.render_page(request, context, status)
    return redirect(_next_url(request, vm_name, op.pk if op else None))


def _confirmation(request: HttpRequest, name: str, context: dict, status: int = 200) -> HttpResponse:
    return snapshot_views.render_confirmation(
        request, dialog=f"vms/confirm_{name}_form.html", page=f"vms/confirm_{name}.html", context=context, status=status
    )


@login_required
@require_http_methods(["GET", "POST"])
def vm_power(request: HttpRequest, name: str, action: str) -> HttpResponse:
    if action not in power.POWER_ACTIONS:
        raise NotFound(f"There is no power action {action!r}: use {', '.join(power.POWER_ACTIONS)}.")
    label = power.POWER_ACTIONS[action].button
    error, status = "", 200
    if request.method == "POST":
        timeout = request.POST.get("timeout", "").strip()
        try:
            op = power.request_power(
                Actor.from_request(request), name, action, timeout=int(timeout) if timeout.isdigit() else (timeout or None)
            )
        except AppError as exc:
            in_place(exc)
            if not request.POST.get("confirmed"):
                messages.error(request, exc.message)
                return _back_to_page(request, name, status=exc.status)
            error, status = exc.message, exc.status
        else:
            messages.success(request, f"{label} {name}: task #{op.pk} started.")
            return _back_to_page(request, name, op)
    vm = policy.get_vm(request.user, name, "power", snapshots=False)
    context = {
        "vm": vm,
        "action": action,
        "label": label,
        "refusal": power.power_refusal(action, vm),
        "error": error,
        "next": _came_from(request),
        "timeout": power.shutdown_timeout(),
    }
    return _confirmation(request, "power", context, status)


@login_required
@require_http_methods(["GET", "POST"])
def vm_delete(request: HttpRequest, name: str) -> HttpResponse:
    error, status = "", 200
    storage = request.POST.get("storage") in ("on", "true", "1")
    if request.method == "POST":
        if request.POST.get("confirm", "").strip() != name:
            policy.get_vm(request.user, name, "delete", snapshots=False)  # 404 / 403 first
            error, status = f"Type the VM's name, {name}, to confirm.", 400
        else:
            try:
                op = removal.request_delete(Actor.from_request(request), name, storage=storage)
            except AppError as exc:
                error, status = in_place(exc).message, exc.status
            else:
                messages.success(request, f"Deleting {name}: task #{op.pk} started.")
                # The VM page goes with the VM: follow the task instead.
                if request.htmx:
                    return HttpResponseClientRedirect(reverse("task-detail", args=[op.pk]))
                return redirect("task-detail", op.pk)
    vm = policy.get_vm(request.user, name, "delete")
    context = {"vm": vm, "error": error, "storage": storage, "disks": [d for d in vm.disks if d.needs_qcow2]}
    return _confirmation(request, "delete", context, status)


@login_required
@require_http_methods(["GET", "POST"])
def vm_clone(request: HttpRequest, name: str) -> HttpResponse:
    error, status = "", 200
    wanted = request.POST.get("name", "").strip()
    if request.method == "POST":
        try:
            op = clone.request_clone(Actor.from_request(request), name, wanted or None)
        except AppError as exc:
            error, status = in_place(exc).message, exc.status
        else:
            messages.success(request, f"Cloning {name} to {op.params['name']}: task #{op.pk} started.")
            return _back_to_page(request, name, op)
    vm = policy.get_vm(request.user, name, "clone", snapshots=False)
    try:
        suggestion = clone.default_clone_name(vm, hypervisor.domain_xml(vm.uuid))
    except AppError:
        suggestion = f"{vm.name}-clone"
    context = {
        "vm": vm,
        "error": error,
        "wanted": wanted,
        "suggestion": suggestion,
        "name_rule": VM_NAME.text,
        "refusal": "" if vm.state == "shutoff" else f"{vm.name} is {vm.state}: shut it down to clone it.",
    }
    return _confirmation(request, "clone", context, status)
