from django.core.management.base import BaseCommand, CommandError

from core.errors import AppError
from vms import grants


class GrantCommand(BaseCommand):
    """Shared arguments of ``grant`` and ``revoke``: USER ROLE (or --group NAME ROLE) and a scope."""

    def add_arguments(self, parser):
        parser.usage = "%(prog)s (USER | --group NAME) ROLE [--vm NAME | --all-vms]"
        parser.add_argument("names", nargs="+", metavar="USER ROLE", help="the user and the role (only the role with --group)")
        parser.add_argument("--group", metavar="NAME", help="a group instead of a user")
        scope = parser.add_mutually_exclusive_group()
        scope.add_argument("--vm", metavar="NAME", help="one VM (name or UUID)")
        scope.add_argument("--all-vms", action="store_true", help="every VM, present and future")

    def parse(self, names, group, vm, all_vms) -> dict:
        expected = 1 if group else 2
        if len(names) != expected:
            usage = "--group NAME ROLE" if group else "USER ROLE"
            raise CommandError(f"Expected {usage}, got: {' '.join(names)}.")
        try:
            target = {"group": grants.get_group(group)} if group else {"user": grants.get_user(names[0])}
            role = grants.get_role(names[-1])
        except AppError as exc:
            raise CommandError(exc.message) from None
        scope = vm if vm else ("" if all_vms or grants.is_global(role) else None)
        if scope is None:
            raise CommandError(f"Say where role {role.name} applies: --vm NAME or --all-vms.")
        return {"role": role, "vm": scope, **target}

    def handle(self, *args, names, group=None, vm=None, all_vms=False, **options):
        arguments = self.parse(names, group, vm, all_vms)
        try:
            self.stdout.write(self.act(arguments))
        except AppError as exc:
            raise CommandError(exc.message) from None

    def act(self, arguments: dict) -> str:
        grant, created = grants.grant_role(**arguments, actor=grants.command_actor())
        if not created:
            return f"Already granted: {grant}."
        return self.style.SUCCESS(f"Granted {grant.role.name} to {grant.grantee} on {grant.scope}.")


class Command(GrantCommand):
    help = (
        "Give a role to a user (or --group NAME) on one VM (--vm NAME) or on all VMs (--all-vms); "
        "global roles (auditor) need neither. E.g. `grant alice operator --vm web-1`, `grant carol auditor`."
    )
