"""``GET /api/audit`` (auditors and admins) and ``GET /api/vms/<vm>/history`` (whoever may view the VM)."""

from urllib.parse import urlencode

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import error_responses
from operations import history
from operations.audit_search import check_can_audit, search
from operations.models import AuditEvent
from operations.serializers import AuditEventSerializer, parse_query
from vms.errors import Invalid

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


class AuditPageQuery(serializers.Serializer):
    """The paging parameters (the filters are the audit page's form: operations.audit_search)."""

    limit = serializers.IntegerField(
        required=False,
        default=DEFAULT_LIMIT,
        min_value=1,
        max_value=MAX_LIMIT,
        help_text=f"at most this many (default {DEFAULT_LIMIT})",
    )
    before = serializers.IntegerField(
        required=False, min_value=1, help_text="only events older than the event with this id (the next page)"
    )


class AuditList(APIView):
    @extend_schema(
        responses={200: AuditEventSerializer(many=True), **error_responses(400, 403)},
        description="Audit events, newest first (auditors and admins). The `Link` header (rel=next) gives the next page.",
        parameters=[
            OpenApiParameter("user", str, description="username (as recorded, any case)"),
            OpenApiParameter("vm", str, description="VM name or UUID"),
            OpenApiParameter("action", str, description="an action (snapshot.delete) or a family (snapshot)"),
            OpenApiParameter("outcome", str, enum=[c for c, _ in AuditEvent.Outcome.choices]),
            OpenApiParameter("stage", str, enum=[c for c, _ in AuditEvent.Stage.choices]),
            OpenApiParameter("snapshot", str),
            OpenApiParameter("from", str, description="YYYY-MM-DD or an ISO date and time (inclusive)"),
            OpenApiParameter("to", str, description="YYYY-MM-DD (that whole day) or an ISO date and time (exclusive)"),
            AuditPageQuery,
        ],
    )
    def get(self, request):
        check_can_audit(request.user)
        params = request.query_params
        page_query = parse_query(AuditPageQuery, request)
        limit, before = page_query["limit"], page_query.get("before")
        events = search(params)
        if before is not None:
            last = AuditEvent.objects.filter(pk=before).values_list("time", flat=True).first()
            if last is None:
                raise Invalid(f"There is no audit event #{before} to page from.")
            events = events.filter(time__lte=last).exclude(time=last, id__gte=before)
        page = list(events[: limit + 1])
        headers = {}
        if len(page) > limit:
            page = page[:limit]
            query = {k: v for k, v in params.items() if k != "before"}
            headers["Link"] = f'<{request.path}?{urlencode({**query, "before": page[-1].pk})}>; rel="next"'
        return Response(AuditEventSerializer(page, many=True).data, headers=headers)


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
