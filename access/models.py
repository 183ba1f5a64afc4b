"""Roles and grants, and people's API tokens. The grant tables keep their first names
(vms_role, vms_grant): they moved here from the vms app without a change in the database."""

import hashlib
import secrets
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q
from django.utils import timezone

# Per-VM permissions, in the order the UI lists them.
PERMISSIONS = (
    ("view", "See the VM, its snapshots and its history"),
    ("power", "Start, shut down, force off, reboot, pause, resume"),
    ("snapshot_create", "Take snapshots"),
    ("snapshot_revert", "Revert to a snapshot"),
    ("snapshot_edit", "Rename snapshots, edit descriptions"),
    ("snapshot_delete", "Delete snapshots"),
    ("clone", "Clone the VM with its snapshots"),
    ("delete", "Delete the VM and its snapshots"),
)
PERMISSION_NAMES = tuple(name for name, _ in PERMISSIONS)
# A global-only permission: read every VM, task and audit entry.
AUDIT = "audit"


class Role(models.Model):
    """A named bundle of permissions. Roles are data: admins may add their own."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    permissions = models.JSONField(default=list, help_text='Permission names, e.g. ["view", "power"]')
    builtin = models.BooleanField(default=False, editable=False)

    class Meta:
        db_table = "vms_role"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Grant(models.Model):
    """A role given to a user or a group, on one VM (by UUID) or on all VMs."""

    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="grants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="vm_grants")
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="vm_grants")
    vm_uuid = models.CharField(max_length=36, blank=True, help_text="Empty: all VMs", db_index=True)
    vm_name = models.CharField(max_length=200, blank=True, help_text="The VM's name when granted (for display)")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        db_table = "vms_grant"
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False)),
                name="grant_to_user_or_group",
            ),
            models.UniqueConstraint(fields=["role", "user", "vm_uuid"], name="unique_user_grant"),
            models.UniqueConstraint(fields=["role", "group", "vm_uuid"], name="unique_group_grant"),
        ]

    def __str__(self) -> str:
        return f"{self.role} for {self.grantee} on {self.scope}"

    @property
    def grantee(self) -> str:
        return f"user {self.user.username}" if self.user_id else f"group {self.group.name}"

    @property
    def scope(self) -> str:
        return f"VM {self.vm_name or self.vm_uuid}" if self.vm_uuid else "all VMs"


class ApiToken(models.Model):
    """A person's named key for ``Authorization: Token <key>``, made on the API tokens page.

    Only the key's SHA-256 is kept (the key is shown once, when made); ``prefix`` (its
    first characters) tells tokens apart on the page and in the audit trail. A revoked
    token keeps its row, so that using it answers "revoked" and not "invalid".
    """

    KEY_PREFIX = "vs_"
    PREFIX_LENGTH = len(KEY_PREFIX) + 6
    NAME_MAX_LENGTH = 100

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    key_hash = models.CharField(max_length=64, unique=True, editable=False, help_text="SHA-256 of the key, hex")
    prefix = models.CharField(max_length=16, editable=False, help_text="The key's first characters, for display")
    created = models.DateTimeField(default=timezone.now, editable=False)
    # Written at most once a minute per token (LAST_USED_EVERY in operations.authentication).
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    expires = models.DateTimeField(null=True, blank=True, help_text="Empty: never")
    revoked = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            # A revoked token's name may be used again.
            models.UniqueConstraint(fields=["user", "name"], condition=Q(revoked__isnull=True), name="unique_live_token_name"),
            models.CheckConstraint(condition=~Q(name=""), name="token_name_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def new_key() -> str:
        """A fresh key: recognisable by its prefix (secret scanners, our authentication), 256 random bits."""
        return ApiToken.KEY_PREFIX + secrets.token_urlsafe(32)

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and self.expires <= (now or timezone.now())
