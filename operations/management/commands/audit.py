"""``manage.py audit verify``: checks the audit trail's hash chain and the database triggers guarding it."""

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from operations import audit
from operations.models import AuditEvent

# The triggers operations migration 0003 makes, and how to list those in force.
GUARDS = {
    "sqlite": (
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
        {"auditevent_no_update", "auditevent_no_delete"},
    ),
    "postgresql": (
        "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND NOT tgisinternal AND tgenabled <> 'D'",
        {"auditevent_no_change", "auditevent_no_truncate"},
    ),
}


def missing_guards() -> list[str]:
    """The triggers refusing changes to audit rows that are gone or disabled (a SQLite
    table rebuild by a later migration would drop them silently)."""
    sql, expected = GUARDS.get(connection.vendor, ("", set()))
    if not sql:
        return []
    with connection.cursor() as cursor:
        cursor.execute(sql, [AuditEvent._meta.db_table])
        present = {name for (name,) in cursor.fetchall()}
    return sorted(expected - present)


class Command(BaseCommand):
    help = "The audit trail: `verify` walks the hash chain in id order and names the first broken link."

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="subcommand", required=True, metavar="verify")
        commands.add_parser(
            "verify",
            help="recompute every row's hash; exit 1 naming the first row altered or missing, or if the triggers are gone",
        )

    def handle(self, *args, subcommand, **options):
        check = audit.verify()
        if check.broken:
            raise CommandError(f"Chain broken at {check.broken} ({check.rows} rows read).", returncode=1)
        self.stdout.write(f"{check.rows} rows, chain intact")
        self.stdout.write(f"last hash: {check.last_hash} (note it: rows taken off the end leave no gap)")
        missing = missing_guards()
        if missing:
            raise CommandError(
                f"The database no longer refuses changes to audit rows: trigger {', '.join(missing)} missing or disabled.",
                returncode=1,
            )
