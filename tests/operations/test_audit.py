"""The audit trail: append-only everywhere (model, queryset, database, API, admin),
readable by auditors and admins only, with filters, pages and a CSV export."""

import csv
import io
from datetime import timedelta
from unittest import mock

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from operations import audit
from operations.audit import Actor
from operations.models import AuditEvent, Operation
from tests.conftest import api_for

pytestmark = pytest.mark.django_db


def event(action="snapshot.create", *, username="alice", outcome="success", vm_name="web-1", vm_uuid="", at=None, **kwargs):
    with mock.patch("django.utils.timezone.now", return_value=at or timezone.now()):
        return audit.record(action, actor=None, username=username, outcome=outcome, vm_name=vm_name, vm_uuid=vm_uuid, **kwargs)


@pytest.fixture
def auditor(make_user):
    return make_user("audrey", role="auditor")


# ---------------------------------------------------------------------------
# Append-only


def test_model_and_queryset_refuse_changes():
    e = event(message="as it happened")
    e.message = "rewritten"
    with pytest.raises(PermissionError):
        e.save()
    with pytest.raises(PermissionError):
        e.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=e.pk).update(message="rewritten")
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=e.pk).delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=e.pk).message == "as it happened"


def test_database_refuses_a_raw_update():
    e = event(message="as it happened")
    table = AuditEvent._meta.db_table
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET message = %s WHERE id = %s", ["rewritten", e.pk])
    assert AuditEvent.objects.get(pk=e.pk).message == "as it happened"


def test_admin_only_shows_audit_events(client, admin_user):
    e = event(message="kept forever")
    client.force_login(admin_user)
    listing = client.get("/admin/operations/auditevent/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "kept forever" in html
    assert 'name="_selected_action"' not in html and "delete_selected" not in html
    assert client.get("/admin/operations/auditevent/add/").status_code == 403
    assert client.post("/admin/operations/auditevent/add/", {"action": "forged", "outcome": "success"}).status_code == 403
    view = client.get(f"/admin/operations/auditevent/{e.pk}/change/")
    assert view.status_code == 200 and 'name="_save"' not in view.content.decode()
    assert client.post(f"/admin/operations/auditevent/{e.pk}/change/", {"message": "rewritten"}).status_code == 403
    assert client.get(f"/admin/operations/auditevent/{e.pk}/delete/").status_code == 403
    assert client.post(f"/admin/operations/auditevent/{e.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post("/admin/operations/auditevent/", {"action": "delete_selected", "_selected_action": [e.pk], "post": "yes"})
    assert AuditEvent.objects.get(pk=e.pk).message == "kept forever"


def test_admin_only_shows_tasks(client, admin_user):
    op = Operation.objects.create(kind="snapshot.create", vm_name="web-1", vm_uuid="u-1", status="finished")
    client.force_login(admin_user)
    assert client.get("/admin/operations/operation/").status_code == 200
    assert client.get("/admin/operations/operation/add/").status_code == 403
    assert client.post(f"/admin/operations/operation/{op.pk}/change/", {"status": "failed"}).status_code == 403
    assert client.post(f"/admin/operations/operation/{op.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Operation.objects.get(pk=op.pk).status == "finished"


def test_admin_hides_the_trail_from_non_auditor_staff(client, make_user):
    staff = make_user("stan", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/operations/auditevent/").status_code == 403


def test_api_has_no_way_to_change_the_trail(api):
    e = event(message="as it happened")
    for method in ("post", "put", "patch", "delete"):
        response = getattr(api, method)("/api/audit", {"message": "rewritten"}, format="json")
        assert response.status_code == 405, method
        assert response.json()["code"] == 405
    assert api.get(f"/api/audit/{e.pk}").status_code == 404
    assert AuditEvent.objects.get(pk=e.pk).message == "as it happened"
    # The refused attempts themselves are on the record, as new rows.
    assert AuditEvent.objects.filter(action="api.delete", outcome="failed").count() == 1


# ---------------------------------------------------------------------------
# Who may read


def test_only_auditors_and_admins_read_the_trail(client, make_user, auditor, admin_user, vm):
    owner = make_user("olga", role="owner", vm=vm)
    response = api_for(owner).get("/api/audit")
    assert response.status_code == 403
    assert "auditor" in response.json()["reason"]
    assert APIClient().get("/api/audit").status_code == 401
    client.force_login(owner)
    assert client.get("/audit/").status_code == 403
    assert client.get("/audit/export.csv").status_code == 403
    assert client.get("/audit/?format=csv").status_code == 403
    for reader in (auditor, admin_user):
        assert api_for(reader).get("/api/audit").status_code == 200
        client.force_login(reader)
        assert client.get("/audit/").status_code == 200
    client.logout()
    assert client.get("/audit/").status_code == 302


# ---------------------------------------------------------------------------
# The page


def test_page_is_newest_first_and_paginated(client, auditor):
    for i in range(120):
        event(snapshot=f"s{i:03d}")
    client.force_login(auditor)  # which writes a login event
    everything = client.get("/audit/").content.decode()
    assert "121 events" in everything and "page 1 of 3" in everything
    first = client.get("/audit/?action=snapshot.create").content.decode()
    assert "120 events" in first and "page 1 of 3" in first
    assert first.index("s119") < first.index("s118")
    assert "s069" not in first and "s070" in first
    last = client.get("/audit/?action=snapshot.create&page=3").content.decode()
    assert "s000" in last and "s019" in last and "s020" not in last


def test_page_filters_and_keeps_them_across_pages(client, auditor):
    for i in range(60):
        event(username="bob", snapshot=f"b{i:02d}")
    event(username="carol", outcome="denied", snapshot="c-only")
    client.force_login(auditor)
    html = client.get("/audit/?user=bob").content.decode()
    assert "60 events" in html and "c-only" not in html
    assert "user=bob&amp;page=2" in html
    assert "/audit/export.csv?user=bob" in html
    denied = client.get("/audit/?outcome=denied").content.decode()
    assert "c-only" in denied and "b00" not in denied


def test_page_shows_bad_filters(client, auditor):
    client.force_login(auditor)
    response = client.get("/audit/?from=last-tuesday")
    assert response.status_code == 400
    assert "last-tuesday" in response.content.decode()


def test_htmx_filter_gets_only_the_table(client, auditor):
    event(snapshot="only-row")
    client.force_login(auditor)
    html = client.get("/audit/", headers={"HX-Request": "true"}).content.decode()
    assert "only-row" in html and "<html" not in html


# ---------------------------------------------------------------------------
# Filters (API) and CSV


def test_api_filters(auditor):
    now = timezone.now()
    event("snapshot.create", username="bob", vm_name="web-1", vm_uuid="uuid-web-1", at=now - timedelta(days=3))
    event("snapshot.delete", username="bob", vm_name="db-1", vm_uuid="uuid-db-1", outcome="denied", at=now - timedelta(days=1))
    event("login", username="Carol", vm_name="", stage=AuditEvent.Stage.EVENT, outcome="failed", at=now)
    api = api_for(auditor)

    def actions(query):
        response = api.get(f"/api/audit?{query}")
        assert response.status_code == 200, response.json()
        return [e["action"] for e in response.json()]

    assert actions("user=bob") == ["snapshot.delete", "snapshot.create"]
    assert actions("user=carol") == ["login"]
    assert actions("vm=web-1") == ["snapshot.create"] == actions("vm=uuid-web-1")
    assert actions("action=snapshot") == ["snapshot.delete", "snapshot.create"]
    assert actions("action=snapshot.delete") == ["snapshot.delete"]
    assert actions("action=snap") == []
    assert actions("outcome=denied") == ["snapshot.delete"]
    assert actions("stage=event") == ["login"]
    day = (now - timedelta(days=1)).date().isoformat()
    assert actions(f"from={day}&to={day}") == ["snapshot.delete"]
    assert actions(f"to={(now - timedelta(days=2)).date().isoformat()}") == ["snapshot.create"]
    assert actions(f"from={(now - timedelta(hours=1)).isoformat()}".replace("+", "%2B")) == ["login"]
    first = api.get("/api/audit?user=bob").json()[0]
    assert set(first) >= {"time", "user", "client_ip", "action", "vm_name", "vm_uuid", "snapshot", "outcome", "message", "task"}


@pytest.mark.parametrize("query", ["from=yesterday", "to=2026-13-45", "outcome=meh", "stage=x", "limit=0", "limit=abc"])
def test_api_bad_filters_are_400(auditor, query):
    response = api_for(auditor).get(f"/api/audit?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == 400 and query.split("=")[0] in response.json()["reason"]


def test_api_limit_and_next_page(auditor):
    made = [event(snapshot=f"n{i}") for i in range(7)]
    api = api_for(auditor)
    response = api.get("/api/audit?action=snapshot.create&limit=3")
    assert [e["snapshot"] for e in response.json()] == ["n6", "n5", "n4"]
    seen = []
    url = "/api/audit?action=snapshot.create&limit=3"
    while url:
        response = api.get(url)
        seen += [e["id"] for e in response.json()]
        link = response.headers.get("Link")
        url = link[1 : link.index(">")] if link else None
    assert seen == [e.pk for e in reversed(made)]
    assert api.get("/api/audit?before=999999").status_code == 400


def read_csv(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_csv_export_of_the_filtered_view(client, auditor):
    event(username="bob", snapshot="by-bob", message='=HYPERLINK("http://evil")', params={"mode": "all"})
    event(username="carol", snapshot="by-carol")
    client.force_login(auditor)
    response = client.get("/audit/export.csv?user=bob")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = read_csv(response)
    header, body = rows[0], rows[1:]
    assert header[:4] == ["time", "user", "client_ip", "action"]
    assert len(body) == 1
    row = dict(zip(header, body[0], strict=True))
    assert row["user"] == "bob" and row["snapshot"] == "by-bob" and row["params"] == '{"mode": "all"}'
    # A spreadsheet must not run what someone typed.
    assert row["message"].startswith("'=")
    same = read_csv(client.get("/audit/?user=bob&format=csv"))
    assert same[1:] == body
    assert client.get("/audit/export.csv?from=nope").status_code == 400


def test_every_snapshot_request_is_on_the_record(api, vm, make_user):
    """A request refused before any service ran (bad JSON, no login) is recorded too."""
    viewer = make_user("vic", role="viewer", vm=vm)
    api_for(viewer).post(f"/api/vms/{vm.name}/snapshots", {"name": "nope"}, format="json")
    APIClient().post(f"/api/vms/{vm.name}/snapshots", {"name": "nope"}, format="json")
    api.post(f"/api/vms/{vm.name}/snapshots", {"name": "12345"}, format="json")
    rows = AuditEvent.objects.filter(action="snapshot.create").order_by("id")
    assert [(r.username, r.outcome) for r in rows] == [("vic", "denied"), ("", "denied"), ("root-admin", "failed")]
    assert Actor(user=None).username == ""
