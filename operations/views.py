from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from operations.api import filter_tasks, get_task, visible_operations


@login_required
def task_list(request):
    tasks = filter_tasks(visible_operations(request.user), request.GET)[:200]
    return render(request, "operations/task_list.html", {"tasks": tasks})


@login_required
def task_detail(request, task_id: int):
    return render(request, "operations/task_detail.html", {"task": get_task(request.user, task_id)})
