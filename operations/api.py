from django.db.models import Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from operations import runner
from operations.models import Operation
from operations.serializers import TaskSerializer
from vms import access
from vms.errors import Invalid, NotFound


def visible_operations(user):
    return access.restrict_by_vm(user, Operation.objects.all())


def get_task(user, task_id) -> Operation:
    op = visible_operations(user).filter(pk=task_id).first()
    if op is None:
        raise NotFound(f"There is no task #{task_id} that you can see.")
    if op.is_active and runner.settle_if_orphaned(op):
        op.refresh_from_db()
    return op


STATUS_FILTER = {"running": Operation.ACTIVE, "finished": ["finished"], "failed": ["failed"], "queued": ["queued"]}


def filter_tasks(queryset, params):
    status = params.get("status")
    if status:
        if status not in STATUS_FILTER:
            raise Invalid(f"Unknown status {status!r}: use running, finished or failed.")
        queryset = queryset.filter(status__in=STATUS_FILTER[status])
    if params.get("vm"):
        queryset = queryset.filter(Q(vm_name=params["vm"]) | Q(vm_uuid=params["vm"]))
    if params.get("user"):
        queryset = queryset.filter(username=params["user"])
    return queryset


class TaskList(APIView):
    @extend_schema(
        responses=TaskSerializer(many=True),
        parameters=[
            OpenApiParameter("status", str, enum=["running", "finished", "failed"]),
            OpenApiParameter("vm", str, description="VM name or UUID"),
            OpenApiParameter("user", str, description="username"),
            OpenApiParameter("limit", int, description="at most this many, newest first (default 100, max 1000)"),
        ],
    )
    def get(self, request):
        try:
            limit = min(1000, max(1, int(request.query_params.get("limit", 100))))
        except ValueError:
            raise Invalid("limit must be a number.") from None
        tasks = filter_tasks(visible_operations(request.user), request.query_params)[:limit]
        return Response(TaskSerializer(tasks, many=True).data)


class TaskDetail(APIView):
    @extend_schema(responses=TaskSerializer)
    def get(self, request, task_id: int):
        return Response(TaskSerializer(get_task(request.user, task_id)).data)
