"""``GET /api/tasks`` and ``/api/tasks/<id>``, and the 202 answer every long operation gives."""

from django.db.models import Q
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from access import policy
from core.api.errors import error_responses
from core.api.inputs import StrictSerializer, parse_body, parse_query
from core.errors import Invalid, NotFound
from operations import runner
from operations.audit import Actor
from operations.models import Operation
from operations.serializers import TaskSerializer


def visible_operations(user):
    return policy.restrict_by_vm(user, Operation.objects.all())


def task_response(op: Operation) -> Response:
    return Response(TaskSerializer(op).data, status=202, headers={"Location": f"/api/tasks/{op.pk}"})


TASK = OpenApiResponse(TaskSerializer, description="Queued: follow the Task (also in the Location header)")


def get_task(user, task_id) -> Operation:
    op = visible_operations(user).filter(pk=task_id).first()
    if op is None:
        raise NotFound(f"There is no task #{task_id} that you can see.")
    if op.is_active and runner.settle_if_orphaned(op):
        op.refresh_from_db()
    return op


STATUS_FILTER = {"running": Operation.ACTIVE, "finished": ["finished"], "failed": ["failed"], "queued": ["queued"]}
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


class TaskListQuery(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=list(STATUS_FILTER),
        required=False,
        allow_blank=True,
        help_text="running (queued ones too), finished or failed; queued: not started yet",
        error_messages={"invalid_choice": "Unknown status {input!r}: use running, finished or failed."},
    )
    vm = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, max_length=200, help_text="VM name or UUID"
    )
    user = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, max_length=150, help_text="username")
    limit = serializers.IntegerField(
        required=False,
        default=DEFAULT_LIMIT,
        min_value=1,
        max_value=MAX_LIMIT,
        help_text=f"at most this many, newest first (default {DEFAULT_LIMIT})",
    )


def filter_tasks(queryset, params):
    """Tasks matching the ``status``, ``vm`` and ``user`` filters (the task page's and the API's)."""
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
        responses={200: TaskSerializer(many=True), **error_responses(400)},
        parameters=[TaskListQuery],
        description="Tasks on the VMs you may see, newest first.",
    )
    def get(self, request):
        query = parse_query(TaskListQuery, request)
        tasks = filter_tasks(visible_operations(request.user), query)[: query["limit"]]
        return Response(TaskSerializer(tasks, many=True).data)


class TaskDetail(APIView):
    @extend_schema(responses={200: TaskSerializer, **error_responses(404)})
    def get(self, request, task_id: int):
        return Response(TaskSerializer(get_task(request.user, task_id)).data)


class TaskCancel(APIView):
    audit_actions = {"POST": "task.cancel"}

    @extend_schema(
        request=None,
        responses={200: TaskSerializer, **error_responses(403, 404, 409, body=True)},
        description="Cancel a task no worker has started yet (its requester or an admin): 200 with the ended task; "
        "409 once it runs (libvirt's calls cannot be aborted) or has ended.",
    )
    def post(self, request, task_id: int):
        parse_body(StrictSerializer, request)
        op = runner.cancel(get_task(request.user, task_id), Actor.from_request(request))
        return Response(TaskSerializer(op).data)
