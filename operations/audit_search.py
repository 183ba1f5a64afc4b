"""Reading the audit trail: the filters shared by the page, the CSV export and
``GET /api/audit``, and the CSV rows themselves (who may read it: access.policy)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

from django import forms
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from core.errors import Invalid
from operations.models import AuditEvent


class MomentField(forms.CharField):
    """A date (``2026-11-25``) or a date and time (``2026-11-25T14:30``, with or without zone).

    A date alone means the start of that day, or with ``end_of_day`` the start of the next.
    """

    def __init__(self, *, end_of_day: bool = False, **kwargs):
        self.end_of_day = end_of_day
        super().__init__(required=False, **kwargs)

    def to_python(self, value):
        value = super().to_python(value).strip()
        if not value:
            return None
        try:
            # Date first: parse_datetime takes a bare date for midnight.
            day = parse_date(value)
            moment = None if day else parse_datetime(value)
        except ValueError:
            moment = day = None
        if moment is None and day is None:
            raise forms.ValidationError(f"{value!r} is not a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM).")
        try:
            if moment is None:
                moment = datetime.combine(day + timedelta(days=1) if self.end_of_day else day, time.min)
            if timezone.is_naive(moment):
                moment = timezone.make_aware(moment)
            moment.astimezone(UTC)  # how the database compares it
        except OverflowError:
            raise forms.ValidationError(f"{value!r} is out of range: use a date from 0001-01-02 to 9999-12-30.") from None
        return moment


class AuditFilter(forms.Form):
    user = forms.CharField(required=False, max_length=150, help_text="username, as recorded")
    vm = forms.CharField(required=False, max_length=200, help_text="VM name or UUID")
    action = forms.CharField(
        required=False, max_length=40, help_text="e.g. snapshot.delete, or snapshot for every snapshot action"
    )
    outcome = forms.ChoiceField(required=False, choices=[("", "any")] + list(AuditEvent.Outcome.choices))
    stage = forms.ChoiceField(required=False, choices=[("", "any")] + list(AuditEvent.Stage.choices))
    snapshot = forms.CharField(required=False, max_length=64)
    start = MomentField(label="From")
    end = MomentField(label="To", end_of_day=True, help_text="a date alone includes that whole day")

    # The query string says from/to (Python keywords, so not field names).
    PARAMS = {"start": "from", "end": "to"}

    def add_prefix(self, field_name):
        return self.PARAMS.get(field_name, field_name)

    def reason(self) -> str:
        return " ".join(f"{self.PARAMS.get(field, field)}: {' '.join(errors)}" for field, errors in self.errors.items())

    def apply(self, queryset: QuerySet) -> QuerySet:
        data = self.cleaned_data
        if data.get("user"):
            queryset = queryset.filter(username__iexact=data["user"])
        if data.get("vm"):
            queryset = queryset.filter(Q(vm_name=data["vm"]) | Q(vm_uuid=data["vm"]))
        if data.get("action"):
            action = data["action"].rstrip(".*")
            queryset = queryset.filter(Q(action=action) | Q(action__startswith=f"{action}."))
        for name in ("outcome", "stage", "snapshot"):
            if data.get(name):
                queryset = queryset.filter(**{name: data[name]})
        if data.get("start"):
            queryset = queryset.filter(time__gte=data["start"])
        if data.get("end"):
            queryset = queryset.filter(time__lt=data["end"])
        return queryset


def search(params, form: AuditFilter | None = None) -> QuerySet:
    """Audit events matching the query-string filters (or the bound ``form``), newest first;
    Invalid (400) on a bad filter."""
    form = form or AuditFilter(params)
    if not form.is_valid():
        raise Invalid(form.reason())
    return form.apply(AuditEvent.objects.select_related("repeat")).order_by("-time", "-id")


# ---------------------------------------------------------------------------
# CSV

CSV_COLUMNS = [
    "time",
    "user",
    "client_ip",
    "action",
    "stage",
    "outcome",
    "vm_name",
    "vm_uuid",
    "snapshot",
    "task",
    "request_id",
    "message",
    "params",
    "repeats",
    "hash",
]


def _cell(value) -> str:
    text = "" if value is None else str(value)
    # Spreadsheets run cells that start like a formula: the trail must never do that.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    return text


def csv_rows(queryset: QuerySet) -> Iterator[list[str]]:
    yield CSV_COLUMNS
    for event in queryset.iterator(chunk_size=2000):
        yield [
            _cell(value)
            for value in (
                event.time.isoformat(),
                event.username,
                event.client_ip,
                event.action,
                event.stage,
                event.outcome,
                event.vm_name,
                event.vm_uuid,
                event.snapshot,
                event.operation_id,
                event.request_id,
                event.message,
                json.dumps(event.params, sort_keys=True) if event.params else "",
                event.repeats,
                event.hash,
            )
        ]
