from vms import grants
from vms.management.commands.grant import GrantCommand


class Command(GrantCommand):
    help = "Take back a role given with `grant` (same arguments)."

    def act(self, arguments: dict) -> str:
        grant = grants.revoke_role(**arguments, actor=grants.command_actor())
        return self.style.SUCCESS(f"Revoked {grant.role.name} from {grant.grantee} on {grant.scope}.")
