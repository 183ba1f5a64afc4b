"""The task pages: list, one task, its live progress bar, and a VM page's watch; the login page."""

import math
from collections.abc import Iterable

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django_htmx.http import trigger_client_event

from access import policy
from core import hypervisor
from core.errors import AppError, NotFound
from operations import runner
from operations.api import filter_tasks, get_task, visible_operations
from operations.login_guard import LoginLocked
from operations.models import Operation


def link_vms(tasks: Iterable[Operation]) -> None:
    """Give each task ``vm_url``: its VM's page (under the VM's name now), or, once the VM
    is gone from libvirt (``vm_gone``), its history page, which keeps deleted VMs.

    One lookup per VM shown; if libvirt cannot be asked, the VM pages stay the links
    (and say so themselves).
    """
    now: dict[str, str | None] = {}
    reachable = True
    for task in tasks:
        uuid = task.vm_uuid
        if uuid not in now:
            now[uuid] = task.vm_name
            if uuid and reachable:
                try:
                    now[uuid] = hypervisor.get_vm(uuid, snapshots=False).name
                except NotFound:
                    now[uuid] = None
                except AppError:
                    reachable = False
        name = now[uuid]
        task.vm_gone = name is None
        task.vm_url = reverse("vm-history", args=[task.vm_name]) if name is None else reverse("vm-detail", args=[name])


@login_required
def task_list(request):
    tasks = list(filter_tasks(visible_operations(request.user), request.GET)[:200])
    link_vms(tasks)
    return render(
        request,
        "operations/task_list.html",
        {"tasks": tasks, "any_active": any(t.is_active for t in tasks), "status": request.GET.get("status", "")},
    )


@login_required
def task_detail(request, task_id: int):
    task = get_task(request.user, task_id)
    link_vms([task])
    return render(request, "operations/task_detail.html", {"task": task})


def _ended(response: HttpResponse, op) -> HttpResponse:
    # The page around the progress bar refreshes itself (static/js/virtsnap.js).
    return trigger_client_event(response, "vs-task-ended", {"task": op.pk, "vm": op.vm_uuid})


@login_required
def task_progress(request, task_id: int):
    """A task's progress bar (htmx polls it); without htmx, the task's page."""
    if not request.htmx:
        return redirect("task-detail", task_id)
    op = get_task(request.user, task_id)
    view = request.GET.get("view", "")
    if view == "detail":
        link_vms([op])
    template = "operations/_task_live.html" if view == "detail" else "operations/_progress.html"
    response = render(request, template, {"op": op, "task": op, "view": view})
    return response if op.is_active else _ended(response, op)


@login_required
def vm_task_watch(request, vm_uuid: str):
    """Tell a VM page that an operation started or ended since it was drawn (no libvirt call)."""
    if not policy.access_for(request.user).can_view(vm_uuid):
        raise NotFound("There is no VM that you can see here.")
    value = request.GET.get("shown", "0")
    shown = int(value) if value.isdigit() else 0
    active = runner.active_operation(vm_uuid)
    response = HttpResponse(status=204)
    if active is not None and active.pk != shown:
        trigger_client_event(response, "vs-task-started", {"task": active.pk, "vm": vm_uuid})
    elif active is None and shown:
        trigger_client_event(response, "vs-task-ended", {"task": shown, "vm": vm_uuid})
    return response


class LoginView(auth_views.LoginView):
    """Django's login page; a locked-out login answers 429 with Retry-After, as HTTP Basic does."""

    def form_invalid(self, form):
        response = super().form_invalid(form)
        locks = [e for e in form.non_field_errors().as_data() if isinstance(e, LoginLocked)]
        if locks:
            response.status_code = 429
            response["Retry-After"] = str(math.ceil(locks[0].retry_after))
        return response
