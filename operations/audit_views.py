"""The audit trail's page and its CSV export (auditors and admins)."""

import csv

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from access import policy
from core.errors import Invalid
from operations.audit_search import AuditFilter, csv_rows, search
from operations.models import AuditEvent

PAGE_SIZE = 50


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value):
        return value


@login_required
@require_GET
def audit_list(request):
    policy.require_audit(request.user)
    if request.GET.get("format") == "csv":
        return _csv(request)
    form = AuditFilter(request.GET)
    try:
        events, status = search(request.GET, form), 200
    except Invalid:
        events, status = AuditEvent.objects.none(), 400
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    actions = AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct()
    context = {"form": form, "page": page, "events": page.object_list, "actions": actions}
    partial = request.htmx and not request.htmx.boosted  # the filter form swaps only the table
    template = "operations/_audit_table.html" if partial else "operations/audit_list.html"
    return render(request, template, context, status=status)


@login_required
@require_GET
def audit_export(request):
    policy.require_audit(request.user)
    return _csv(request)


def _csv(request):
    """The filtered view as CSV, every matching row (streamed), newest first."""
    events = search(request.GET)
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse((writer.writerow(row) for row in csv_rows(events)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    return response
