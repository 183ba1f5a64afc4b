"""The task pages: list, one task, its live progress bar, and a VM page's watch."""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django_htmx.http import trigger_client_event

from access import policy
from core.errors import NotFound
from operations import runner
from operations.api import filter_tasks, get_task, visible_operations


@login_required
def task_list(request):
    tasks = list(filter_tasks(visible_operations(request.user), request.GET)[:200])
    return render(
        request,
        "operations/task_list.html",
        {"tasks": tasks, "any_active": any(t.is_active for t in tasks), "status": request.GET.get("status", "")},
    )


@login_required
def task_detail(request, task_id: int):
    return render(request, "operations/task_detail.html", {"task": get_task(request.user, task_id)})


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
