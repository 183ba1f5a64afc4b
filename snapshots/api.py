"""The snapshot API: ``/api/vms/<vm>/snapshots[/<snapshot>[/revert]]``, ``…/current``
and a VM's history (``/api/vms/<vm>/history``)."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from access import policy
from core.api.errors import error_responses
from core.api.inputs import NameField, QueryFlag, StrictSerializer, parse_body, parse_query
from core.errors import Invalid
from core.names import SNAPSHOT_NAME
from operations.api import TASK, task_response
from operations.audit import Actor
from snapshots import history, services
from snapshots import tree as trees


class SnapshotCreateInput(StrictSerializer):
    name = NameField(
        rule=SNAPSHOT_NAME, required=False, allow_blank=True, help_text=f"{SNAPSHOT_NAME.text}; default snapshot-<time>"
    )
    description = serializers.CharField(
        required=False, allow_blank=True, max_length=services.MAX_DESCRIPTION, trim_whitespace=False
    )


class SnapshotUpdateInput(StrictSerializer):
    name = NameField(rule=SNAPSHOT_NAME, required=False)
    description = serializers.CharField(
        required=False, allow_blank=True, max_length=services.MAX_DESCRIPTION, trim_whitespace=False
    )


MODE = {
    "choices": services.DELETE_MODES,
    "required": False,
    "help_text": "node (default): this snapshot only, its children move up to its parent; all: with its descendants",
    "error_messages": {
        "invalid_choice": "Unknown delete mode {input!r}: use 'node' (this snapshot only, children move up) "
        "or 'all' (with its descendants)."
    },
}


class SnapshotDeleteInput(StrictSerializer):
    mode = serializers.ChoiceField(**MODE)


class SnapshotDeleteQuery(serializers.Serializer):
    mode = serializers.ChoiceField(**MODE, allow_blank=True)  # mode= is no mode


class SnapshotListQuery(serializers.Serializer):
    parent = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="list the children of this snapshot (default: the roots)",
    )
    all = QueryFlag(required=False, default=False, help_text="true: every snapshot, oldest first")


class SnapshotSchema(serializers.Serializer):
    """The snapshot object (documentation of the answer)."""

    name = serializers.CharField()
    description = serializers.CharField()
    state = serializers.CharField(help_text="the VM's state when taken: running (with memory), shutoff (disks only), ...")
    created = serializers.IntegerField(help_text="epoch seconds")
    parent = serializers.CharField(help_text='parent snapshot name, or ""')
    current = serializers.BooleanField()


# The snapshot object, or {} when there is none (a raw schema: OpenAPI 3.0 has no
# serializer for "an empty object"; SnapshotSchema is a component through the other views).
CURRENT_SCHEMA = {
    "oneOf": [
        {"$ref": "#/components/schemas/SnapshotSchema"},
        {"type": "object", "maxProperties": 0, "description": "no current snapshot"},
    ]
}


class SnapshotList(APIView):
    audit_actions = {"POST": "snapshot.create"}

    @extend_schema(
        responses={200: SnapshotSchema(many=True), **error_responses(400, 404, 503)},
        parameters=[SnapshotListQuery],
        description="The root snapshots (no parent), or the children of `parent`, oldest first; `all=true`: every one.",
    )
    def get(self, request, vm: str):
        query = parse_query(SnapshotListQuery, request)
        tree = trees.load_tree(policy.get_vm(request.user, vm))
        if query["all"]:
            records = tree.records
        elif "parent" in query:
            records = tree.children.get(tree.get(query["parent"]).pk, [])
        else:
            records = tree.roots
        return Response([trees.as_dict(tree, r) for r in records])

    @extend_schema(
        request=SnapshotCreateInput,
        responses={202: TASK, **error_responses(403, 404, 409, 503, body=True)},
        description="Take a snapshot (memory too if the VM runs); the Task's target_uri is the new snapshot.",
    )
    def post(self, request, vm: str):
        data = parse_body(SnapshotCreateInput, request)
        op = services.request_create(Actor.from_request(request), vm, data.get("name") or None, data.get("description", ""))
        return task_response(op)


class CurrentSnapshot(APIView):
    @extend_schema(
        responses={
            200: CURRENT_SCHEMA,
            **error_responses(404, 503),
        },
        description="The current snapshot, or {} when there is none.",
    )
    def get(self, request, vm: str):
        tree = trees.load_tree(policy.get_vm(request.user, vm))
        return Response(trees.as_dict(tree, tree.current) if tree.current else {})


class SnapshotDetail(APIView):
    audit_actions = {"PUT": "snapshot.update", "DELETE": "snapshot.delete"}

    @extend_schema(responses={200: SnapshotSchema, **error_responses(404, 503)})
    def get(self, request, vm: str, snapshot: str):
        tree, record = trees.get_snapshot(request.user, vm, snapshot)
        return Response(trees.as_dict(tree, record))

    @extend_schema(
        request=SnapshotUpdateInput,
        responses={200: SnapshotSchema, **error_responses(403, 404, 409, 503, body=True)},
        description="Rename the snapshot or change its description (at once, no Task).",
    )
    def put(self, request, vm: str, snapshot: str):
        data = parse_body(SnapshotUpdateInput, request)
        tree, record = services.request_update(
            Actor.from_request(request), vm, snapshot, name=data.get("name"), description=data.get("description")
        )
        return Response(trees.as_dict(tree, record))

    @extend_schema(
        request=SnapshotDeleteInput,
        responses={202: TASK, **error_responses(403, 404, 409, 503, body=True)},
        parameters=[SnapshotDeleteQuery],
        description="Delete the snapshot; `mode` in the query or the body (not both, unless they agree).",
    )
    def delete(self, request, vm: str, snapshot: str):
        body = parse_body(SnapshotDeleteInput, request)
        query = parse_query(SnapshotDeleteQuery, request)
        if query.get("mode") and body.get("mode") and body["mode"] != query["mode"]:
            raise Invalid("The mode in the query and in the body differ: send one.")
        mode = query.get("mode") or body.get("mode") or "node"
        return task_response(services.request_delete(Actor.from_request(request), vm, snapshot, mode))


class SnapshotRevert(APIView):
    audit_actions = {"POST": "snapshot.revert"}

    @extend_schema(
        request=None,
        responses={202: TASK, **error_responses(403, 404, 409, 503, body=True)},
        description="Revert the VM to the snapshot: afterwards it is in the snapshot's state and the snapshot is current. "
        "No body (or {}).",
    )
    def post(self, request, vm: str, snapshot: str):
        parse_body(StrictSerializer, request)
        return task_response(services.request_revert(Actor.from_request(request), vm, snapshot))


# ---------------------------------------------------------------------------
# History

EventSchema = inline_serializer(
    "HistoryEvent",
    {
        "time": serializers.DateTimeField(),
        "event": serializers.CharField(help_text="created, renamed, edited, reverted, deleted, found, lost, copied, ..."),
        "snapshot": serializers.CharField(help_text="the snapshot's name at the time"),
        "user": serializers.CharField(),
        "outcome": serializers.CharField(),
        "summary": serializers.CharField(help_text="one readable line"),
        "message": serializers.CharField(),
        "details": serializers.DictField(),
        "task": serializers.IntegerField(allow_null=True),
        "audit_id": serializers.IntegerField(allow_null=True),
    },
    many=True,
)
LifeSchema = inline_serializer(
    "SnapshotLife",
    {
        "name": serializers.CharField(help_text="its name now, or when it was deleted"),
        "former_names": serializers.ListField(child=serializers.CharField()),
        "libvirt_name": serializers.CharField(),
        "description": serializers.CharField(),
        "state": serializers.CharField(),
        "memory": serializers.BooleanField(),
        "created": serializers.IntegerField(help_text="epoch seconds"),
        "created_by": serializers.CharField(),
        "origin": serializers.CharField(help_text="app, outside or clone"),
        "exists": serializers.BooleanField(),
        "deleted": serializers.IntegerField(allow_null=True, help_text="epoch seconds"),
        "deleted_by": serializers.CharField(),
    },
    many=True,
)
HistorySchema = inline_serializer(
    "VMHistory",
    {
        "vm": inline_serializer(
            "HistoryVM", {"name": serializers.CharField(), "uuid": serializers.CharField(), "exists": serializers.BooleanField()}
        ),
        "snapshots": LifeSchema,
        "events": EventSchema,
    },
)


class VMHistory(APIView):
    @extend_schema(
        responses={200: HistorySchema, **error_responses(404, 503)},
        description="Every snapshot the VM ever had (oldest first) and the timeline of their lives (newest first), "
        "including snapshots that no longer exist; a VM deleted since stays reachable by name.",
    )
    def get(self, request, vm: str):
        return Response(history.vm_history(request.user, vm).as_dict())
