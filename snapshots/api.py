from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from operations.audit import Actor
from operations.serializers import StrictSerializer, TaskSerializer
from snapshots import services
from vms import access
from vms.errors import Invalid


class SnapshotCreateInput(StrictSerializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=200, help_text=services.NAME_RULE)
    description = serializers.CharField(
        required=False, allow_blank=True, max_length=services.MAX_DESCRIPTION, trim_whitespace=False
    )


class SnapshotUpdateInput(StrictSerializer):
    name = serializers.CharField(required=False, max_length=200, help_text=services.NAME_RULE)
    description = serializers.CharField(
        required=False, allow_blank=True, max_length=services.MAX_DESCRIPTION, trim_whitespace=False
    )


class SnapshotDeleteInput(StrictSerializer):
    mode = serializers.ChoiceField(choices=services.DELETE_MODES, required=False)


class SnapshotSchema(serializers.Serializer):
    """The snapshot object (documentation of the answer)."""

    name = serializers.CharField()
    description = serializers.CharField()
    state = serializers.CharField(help_text="the VM's state when taken: running (with memory), shutoff (disks only), ...")
    created = serializers.IntegerField(help_text="epoch seconds")
    parent = serializers.CharField(help_text='parent snapshot name, or ""')
    current = serializers.BooleanField()


def parse(serializer_class, request):
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def task_response(op) -> Response:
    return Response(TaskSerializer(op).data, status=202, headers={"Location": f"/api/tasks/{op.pk}"})


class SnapshotList(APIView):
    audit_actions = {"POST": "snapshot.create"}

    @extend_schema(
        responses=SnapshotSchema(many=True),
        parameters=[
            OpenApiParameter("parent", str, description="list the children of this snapshot (default: the roots)"),
            OpenApiParameter("all", bool, description="true: every snapshot"),
        ],
    )
    def get(self, request, vm: str):
        tree = services.load_tree(access.get_vm(request.user, vm))
        if request.query_params.get("all", "").lower() in ("1", "true", "yes"):
            records = tree.records
        elif "parent" in request.query_params:
            records = tree.children.get(tree.get(request.query_params["parent"]).pk, [])
        else:
            records = tree.roots
        return Response([services.as_dict(tree, r) for r in records])

    @extend_schema(request=SnapshotCreateInput, responses={202: TaskSerializer})
    def post(self, request, vm: str):
        data = parse(SnapshotCreateInput, request)
        op = services.request_create(Actor.from_request(request), vm, data.get("name") or None, data.get("description", ""))
        return task_response(op)


class CurrentSnapshot(APIView):
    @extend_schema(responses=SnapshotSchema, description="The current snapshot, or {} when there is none.")
    def get(self, request, vm: str):
        tree = services.load_tree(access.get_vm(request.user, vm))
        return Response(services.as_dict(tree, tree.current) if tree.current else {})


class SnapshotDetail(APIView):
    audit_actions = {"PUT": "snapshot.update", "DELETE": "snapshot.delete"}

    @extend_schema(responses=SnapshotSchema)
    def get(self, request, vm: str, snapshot: str):
        tree, record = services.get_snapshot(request.user, vm, snapshot)
        return Response(services.as_dict(tree, record))

    @extend_schema(request=SnapshotUpdateInput, responses=SnapshotSchema)
    def put(self, request, vm: str, snapshot: str):
        data = parse(SnapshotUpdateInput, request)
        tree, record = services.request_update(
            Actor.from_request(request), vm, snapshot, name=data.get("name"), description=data.get("description")
        )
        return Response(services.as_dict(tree, record))

    @extend_schema(
        request=SnapshotDeleteInput,
        responses={202: TaskSerializer},
        parameters=[
            OpenApiParameter(
                "mode",
                str,
                enum=list(services.DELETE_MODES),
                description="node (default): children move up; all: with descendants",
            )
        ],
    )
    def delete(self, request, vm: str, snapshot: str):
        body = parse(SnapshotDeleteInput, request) if request.data else {}
        mode = request.query_params.get("mode") or body.get("mode") or "node"
        if "mode" in request.query_params and body.get("mode") and body["mode"] != request.query_params["mode"]:
            raise Invalid("The mode in the query and in the body differ: send one.")
        return task_response(services.request_delete(Actor.from_request(request), vm, snapshot, mode))


class SnapshotRevert(APIView):
    audit_actions = {"POST": "snapshot.revert"}

    @extend_schema(request=None, responses={202: TaskSerializer})
    def post(self, request, vm: str, snapshot: str):
        return task_response(services.request_revert(Actor.from_request(request), vm, snapshot))
