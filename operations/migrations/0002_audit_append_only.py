"""Audit events cannot be changed, in the database too, not only in the model.

Only UPDATE is refused here: deletion is refused by the model, its queryset and the
admin, while the database still lets test runs empty their tables between tests.
"""

from django.db import migrations

SQLITE = [
    "CREATE TRIGGER auditevent_no_update BEFORE UPDATE ON operations_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;",
]
SQLITE_REVERSE = ["DROP TRIGGER auditevent_no_update;"]
POSTGRES = [
    "CREATE FUNCTION auditevent_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'audit events are append-only'; END; $$ LANGUAGE plpgsql;",
    "CREATE TRIGGER auditevent_no_change BEFORE UPDATE ON operations_auditevent "
    "FOR EACH ROW EXECUTE FUNCTION auditevent_append_only();",
]
POSTGRES_REVERSE = [
    "DROP TRIGGER auditevent_no_change ON operations_auditevent;",
    "DROP FUNCTION auditevent_append_only();",
]


def forward(apps, schema_editor):
    statements = {"sqlite": SQLITE, "postgresql": POSTGRES}.get(schema_editor.connection.vendor, [])
    for sql in statements:
        schema_editor.execute(sql)


def backward(apps, schema_editor):
    statements = {"sqlite": SQLITE_REVERSE, "postgresql": POSTGRES_REVERSE}.get(schema_editor.connection.vendor, [])
    for sql in statements:
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("operations", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
