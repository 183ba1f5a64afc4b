"""The audit trail cannot be deleted: the database refuses, each row is hash-chained to
the one before (``manage.py audit verify``), and a flood of identical anonymous
refusals leaves one row a minute, with a count, instead of one row a request."""

import csv
import hashlib
import io
import json
import threading
from datetime import timedelta
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from operations import audit
from operations.audit import Actor
from operations.models import AuditEvent
from tests.conftest import api_for, audit_guard_lifted

TABLE = AuditEvent._meta.db_table


def event(message="as it happened", **kwargs) -> AuditEvent:
    return audit.record("snapshot.create", actor=Actor(user=None, ip="10.0.0.9", request_id="r1"), message=message, **kwargs)


def verify() -> str:
    out = io.StringIO()
    call_command("audit", "verify", stdout=out)
    return out.getvalue()


def broken_link() -> str:
    with pytest.raises(CommandError) as refused:
        verify()
    assert refused.value.returncode == 1
    return str(refused.value)


def raw(sql: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def triggers() -> set[str]:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [TABLE])
        else:
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND NOT tgisinternal", [TABLE])
        return {name for (name,) in cursor.fetchall()}


# ---------------------------------------------------------------------------
# The database refuses


@pytest.mark.django_db
def test_database_refuses_a_raw_delete():
    e = event()
    for sql, params in ((f"DELETE FROM {TABLE} WHERE id = %s", [e.pk]), (f"DELETE FROM {TABLE}", [])):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            raw(sql, params)
    assert AuditEvent.objects.filter(pk=e.pk).exists()


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="TRUNCATE is PostgreSQL's")
def test_postgresql_refuses_truncate():
    e = event()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        raw(f"TRUNCATE {TABLE}")
    assert AuditEvent.objects.filter(pk=e.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_the_test_suites_flush_empties_the_table_and_keeps_the_guard():
    guard = triggers()
    event()
    call_command("flush", interactive=False, verbosity=0)
    assert not AuditEvent.objects.exists()
    assert triggers() == guard and len(guard) >= 2
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event()
        raw(f"DELETE FROM {TABLE}")


# ---------------------------------------------------------------------------
# The chain


@pytest.mark.django_db
def test_each_row_is_chained_to_the_one_before():
    first, second = event("one", params={"b": 2, "a": 1}), event("two")
    assert first.prev_hash == "0" * 64 and second.prev_hash == first.hash
    content = {
        "time": first.time.isoformat(timespec="microseconds"),
        "user": None,
        "username": "",
        "client_ip": "10.0.0.9",
        "action": "snapshot.create",
        "stage": "request",
        "vm_name": "",
        "vm_uuid": "",
        "snapshot": "",
        "params": {"a": 1, "b": 2},
        "outcome": "success",
        "message": "one",
        "operation": None,
        "request_id": "r1",
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    assert first.hash == hashlib.sha256(("0" * 64 + canonical).encode()).hexdigest()
    # As stored, read back.
    assert AuditEvent.objects.get(pk=second.pk).hash == second.hash


@pytest.mark.django_db
def test_verify_an_intact_chain():
    for i in range(3):
        event(f"m{i}", params={"path": "/é", "n": i})
    assert verify().startswith("3 rows, chain intact")


@pytest.mark.django_db
def test_verify_names_a_row_altered_behind_the_triggers_back():
    rows = [event(f"m{i}") for i in range(4)]
    with audit_guard_lifted():
        raw(f"UPDATE {TABLE} SET message = %s WHERE id = %s", ["rewritten", rows[2].pk])
    reason = broken_link()
    assert f"row #{rows[2].pk}" in reason and "content" in reason and "altered" in reason


@pytest.mark.django_db
def test_verify_names_the_gap_a_deleted_row_leaves():
    rows = [event(f"m{i}") for i in range(4)]
    with audit_guard_lifted():
        raw(f"DELETE FROM {TABLE} WHERE id = %s", [rows[1].pk])
    reason = broken_link()
    assert f"row #{rows[2].pk}" in reason and f"row #{rows[0].pk}" in reason and "deleted" in reason


@pytest.mark.django_db
def test_verify_names_a_row_rewritten_with_a_fresh_hash():
    rows = [event(f"m{i}") for i in range(3)]
    forged = AuditEvent.objects.get(pk=rows[1].pk)
    forged.message = "rewritten"
    with audit_guard_lifted():
        raw(
            f"UPDATE {TABLE} SET message = %s, hash = %s WHERE id = %s",
            ["rewritten", audit.chain_hash(forged.prev_hash, forged), forged.pk],
        )
    reason = broken_link()
    assert f"row #{rows[2].pk}" in reason and f"#{rows[1].pk} rewritten" in reason


@pytest.mark.django_db
def test_verify_says_when_the_triggers_are_gone():
    event()
    raw("DROP TRIGGER auditevent_no_delete" if connection.vendor == "sqlite" else f"DROP TRIGGER auditevent_no_change ON {TABLE}")
    reason = broken_link()
    assert "no longer refuses" in reason and "auditevent_no_" in reason


@pytest.mark.django_db(transaction=True)
def test_writers_at_once_keep_one_chain():
    """Threads with their own connections, as the web server and the worker are."""

    def write(n):
        try:
            for i in range(15):
                event(f"writer {n}, row {i}")
        finally:
            connection.close()

    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert verify().startswith("60 rows, chain intact")


@pytest.mark.django_db(transaction=True)
def test_an_upgrade_chains_the_rows_already_there():
    executor = MigrationExecutor(connection)
    executor.migrate([("operations", "0002_audit_append_only")])
    old = executor.loader.project_state([("operations", "0002_audit_append_only")]).apps.get_model("operations", "AuditEvent")
    for i in range(3):
        old.objects.create(action="snapshot.create", outcome="success", message=f"before {i}", params={"i": i})
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert verify().startswith("3 rows, chain intact")
    assert AuditEvent.objects.order_by("id").last().prev_hash != "0" * 64
    event("after")
    assert verify().startswith("4 rows, chain intact")


# ---------------------------------------------------------------------------
# A flood of identical anonymous refusals: one row a minute, with a count


@pytest.fixture
def auditor(make_user):
    return make_user("audrey", role="auditor")


@pytest.mark.django_db
def test_identical_anonymous_api_refusals_are_one_row_with_a_count(auditor):
    anonymous = APIClient()
    for _ in range(50):
        assert anonymous.post("/api/vms/web-1/snapshots", {"name": "x"}, format="json").status_code == 401
    anonymous.post("/api/vms/web-2/snapshots", {"name": "x"}, format="json")  # another path
    anonymous.post("/api/vms/web-1/snapshots", {"name": "x"}, format="json", REMOTE_ADDR="10.0.0.2")  # another address
    rows = api_for(auditor).get("/api/audit?action=snapshot.create").json()
    assert [(r["vm_name"], r["client_ip"], r["repeats"]) for r in rows] == [
        ("web-1", "10.0.0.2", 1),
        ("web-2", "127.0.0.1", 1),
        ("web-1", "127.0.0.1", 50),
    ]
    assert "chain intact" in verify()


@pytest.mark.django_db
def test_identical_anonymous_page_refusals_are_one_row_with_a_count(client, auditor):
    for _ in range(50):
        assert client.post("/vms/web-1/snapshots/", {"name": "x"}).status_code == 302
    assert AuditEvent.objects.filter(action="http.post").count() == 1
    assert AuditEvent.objects.get(action="http.post").repeats == 50
    # A minute on, a new row.
    with mock.patch("django.utils.timezone.now", return_value=timezone.now() + timedelta(seconds=61)):
        client.post("/vms/web-1/snapshots/", {"name": "x"})
    assert [e.repeats for e in AuditEvent.objects.filter(action="http.post").order_by("id")] == [50, 1]
    client.force_login(auditor)
    assert "×50" in client.get("/audit/?action=http.post").content.decode()
    body = b"".join(client.get("/audit/export.csv?action=http.post").streaming_content).decode()
    header, *rows = list(csv.reader(io.StringIO(body)))
    assert [row[header.index("repeats")] for row in rows] == ["1", "50"]


@pytest.mark.django_db
def test_refusals_of_a_logged_in_user_are_never_folded(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    for _ in range(3):
        assert client.post("/vms/web-1/snapshots/", {"name": "forged"}).status_code == 403
    assert [e.repeats for e in AuditEvent.objects.filter(action="http.post")] == [1, 1, 1]
