"""Audit rows can be neither changed nor deleted in the database, and each is hash-chained to the one before.

The triggers: UPDATE and DELETE of an audit row are refused on SQLite and PostgreSQL,
and TRUNCATE of the table on PostgreSQL (row triggers do not see a TRUNCATE). They
have no switch: nothing the app can set, write or call lets a DELETE through. Taking
them off takes what any schema change takes (DROP TRIGGER, ALTER TABLE ... DISABLE
TRIGGER, as the table's owner) -- which is why the rows are also hash-chained:
``manage.py audit verify`` names the first row altered or missing, whoever did it.

The test suite's flush: transactional tests empty every table between tests (Django's
flush: DELETE on SQLite, TRUNCATE on PostgreSQL). tests/conftest.py lifts these
triggers for the flush's own transaction, in the test database only, and puts them
back before it commits. Rejected: a marker row or setting the trigger consults (the
app could set it too, and a row is seen by every process); a TEMP table as a
per-connection marker (a SQLite trigger in ``main`` cannot read ``temp``, tried);
a per-connection SQL function (the app could register it too, and the sqlite3 shell
would fail with "no such function" instead of refusing).

Order: 0002's trigger goes first, because adding columns rebuilds the table on SQLite
(which drops its triggers) and the hashes of the rows already there are written by an
UPDATE; then the hashes, in id order, with the app's own ``audit.chain_hash`` so that
``verify`` agrees; the triggers come last. Run it with the app stopped: a row written
meanwhile by the old code would have no hash, and ``verify`` would report it.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

TABLE = "operations_auditevent"

# 0002's guard: UPDATE refused.
SQLITE_0002 = [
    f"CREATE TRIGGER auditevent_no_update BEFORE UPDATE ON {TABLE} "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;",
]
SQLITE_0002_REVERSE = ["DROP TRIGGER IF EXISTS auditevent_no_update;"]
POSTGRES_0002 = [
    f"CREATE TRIGGER auditevent_no_change BEFORE UPDATE ON {TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION auditevent_append_only();",
]
POSTGRES_0002_REVERSE = [f"DROP TRIGGER IF EXISTS auditevent_no_change ON {TABLE};"]

# This one's: UPDATE, DELETE and (PostgreSQL) TRUNCATE refused. The PostgreSQL
# function auditevent_append_only() is 0002's: it raises whatever the operation.
SQLITE = [
    f"CREATE TRIGGER auditevent_no_update BEFORE UPDATE ON {TABLE} "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;",
    f"CREATE TRIGGER auditevent_no_delete BEFORE DELETE ON {TABLE} "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS auditevent_no_update;",
    "DROP TRIGGER IF EXISTS auditevent_no_delete;",
]
POSTGRES = [
    f"CREATE TRIGGER auditevent_no_change BEFORE UPDATE OR DELETE ON {TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION auditevent_append_only();",
    f"CREATE TRIGGER auditevent_no_truncate BEFORE TRUNCATE ON {TABLE} "
    "FOR EACH STATEMENT EXECUTE FUNCTION auditevent_append_only();",
]
POSTGRES_REVERSE = [
    f"DROP TRIGGER IF EXISTS auditevent_no_change ON {TABLE};",
    f"DROP TRIGGER IF EXISTS auditevent_no_truncate ON {TABLE};",
]


def _run(sql_by_vendor):
    def run(apps, schema_editor):
        for sql in sql_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


def chain_existing_rows(apps, schema_editor):
    from operations.audit import GENESIS, chain_hash

    AuditEvent = apps.get_model("operations", "AuditEvent")
    db = schema_editor.connection.alias
    prev = GENESIS
    for event in AuditEvent.objects.using(db).order_by("id").iterator(chunk_size=2000):
        digest = chain_hash(prev, event)
        AuditEvent.objects.using(db).filter(pk=event.pk).update(prev_hash=prev, hash=digest)
        prev = digest


class Migration(migrations.Migration):
    dependencies = [("operations", "0002_audit_append_only")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_0002_REVERSE, "postgresql": POSTGRES_0002_REVERSE}),
            _run({"sqlite": SQLITE_0002, "postgresql": POSTGRES_0002}),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="time",
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.CreateModel(
            name="AuditRepeat",
            fields=[
                (
                    "event",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        primary_key=True,
                        related_name="repeat",
                        serialize=False,
                        to="operations.auditevent",
                    ),
                ),
                ("count", models.PositiveIntegerField(help_text="the refusals the row stands for, its own included")),
                ("last_seen", models.DateTimeField()),
            ],
        ),
        migrations.RunPython(chain_existing_rows, migrations.RunPython.noop),
        migrations.RunPython(
            _run({"sqlite": SQLITE, "postgresql": POSTGRES}),
            _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRES_REVERSE}),
        ),
    ]
