"""``GET /api/audit``: the audit trail for auditors and admins, filtered and paged."""

from urllib.parse import urlencode

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from access import policy
from core.api.errors import error_responses
from core.api.inputs import parse_query
from core.errors import Invalid
from operations.audit_search import search
from operations.models import AuditEvent
from operations.serializers import AuditEventSerializer

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
        policy.require_audit(request.user)
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
