"""Roles and grants in Django admin, through the same service as the grants pages
and the management commands: every change is audited."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group as AuthGroup
from django.core.exceptions import PermissionDenied

from access.models import Grant, Role
from core import hypervisor
from core.errors import AppError
from operations import audit
from operations.audit import Actor
from operations.models import AuditEvent
from vms import grants


class SuperusersOnly:
    """Who may do what is decided by admins (superusers) alone: Django model permissions
    given to a staff account never open these pages (or it could grant itself anything)."""

    def _admin(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_module_permission(self, request):
        return self._admin(request)

    def has_view_permission(self, request, obj=None):
        return self._admin(request)

    def has_add_permission(self, request, obj=None):
        return self._admin(request)

    def has_change_permission(self, request, obj=None):
        return self._admin(request)

    def has_delete_permission(self, request, obj=None):
        return self._admin(request)


class RoleForm(forms.ModelForm):
    permissions = forms.MultipleChoiceField(
        choices=grants.ROLE_PERMISSIONS,
        widget=forms.CheckboxSelectMultiple,
        help_text="'audit' makes the role global: it is granted on all VMs only.",
    )

    class Meta:
        model = Role
        fields = ["name", "description", "permissions"]

    def clean_permissions(self):
        try:
            return grants.validate_permissions(self.cleaned_data["permissions"])
        except AppError as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(Role)
class RoleAdmin(SuperusersOnly, admin.ModelAdmin):
    form = RoleForm
    list_display = ["name", "description", "permission_list", "builtin"]
    actions = None  # bulk delete would bypass the audited path

    @admin.display(description="permissions")
    def permission_list(self, role: Role) -> str:
        return ", ".join(role.permissions)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        # Scripts name roles: a role keeps its name once defined.
        return ["name", "description", "permissions"] if obj.builtin else ["name"]

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and not (obj is not None and obj.builtin)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.builtin)

    def save_model(self, request, obj, form, change):
        role, _ = grants.define_role(obj.name, obj.permissions, obj.description, actor=Actor.from_request(request))
        obj.pk = role.pk

    def delete_model(self, request, obj):
        try:
            grants.delete_role(obj, actor=Actor.from_request(request))
        except AppError as exc:
            raise PermissionDenied(exc.message) from None


class GrantForm(forms.ModelForm):
    vm = forms.ChoiceField(label="VM", required=False, help_text="Empty: all VMs. Global roles (auditor) apply to all VMs.")

    class Meta:
        model = Grant
        fields = ["role", "user", "group"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["vm"].choices = vm_choices()

    def clean(self):
        data = super().clean()
        if bool(data.get("user")) == bool(data.get("group")):
            raise forms.ValidationError("Choose a user or a group (one of them).")
        if data.get("role") is not None:
            try:
                grants.resolve_scope(data["role"], data.get("vm") or "")
            except AppError as exc:
                raise forms.ValidationError(exc.message) from None
        return data


def vm_choices() -> list[tuple[str, str]]:
    """'All VMs' and every VM in libvirt, by UUID (grants follow the VM, not its name)."""
    try:
        vms = hypervisor.list_vms()
    except AppError:
        vms = []
    return [("", "All VMs")] + [(vm.uuid, vm.name) for vm in vms]


@admin.register(Grant)
class GrantAdmin(SuperusersOnly, admin.ModelAdmin):
    """Grants are added and removed, never edited: a change is a removal and an addition."""

    form = GrantForm
    list_display = ["role", "grantee", "scope", "created_at", "created_by"]
    list_filter = ["role"]
    search_fields = ["user__username", "group__name", "vm_name", "vm_uuid"]
    actions = None  # bulk delete would bypass the audited path

    def has_change_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            grant, created = grants.grant_role(
                data["role"],
                user=data.get("user"),
                group=data.get("group"),
                vm=data.get("vm") or "",
                actor=Actor.from_request(request),
            )
        except AppError as exc:
            raise PermissionDenied(exc.message) from None
        if not created:
            messages.info(request, f"Already granted: {grant}.")
        for field in ("pk", "vm_uuid", "vm_name", "created_at", "created_by"):
            setattr(obj, field, getattr(grant, field))

    def delete_model(self, request, obj):
        grants.remove_grant(obj, actor=Actor.from_request(request))


# ---------------------------------------------------------------------------
# Users and groups: Django's own admin pages, with every change on the record
# (a group membership or a superuser flag changes what someone may do as much as a grant).

User = get_user_model()
# Fields whose change the trail names (a password hash never appears in it).
WATCHED = ("username", "is_active", "is_staff", "is_superuser", "groups", "first_name", "last_name", "email")


def _record(request, action: str, message: str, params: dict) -> None:
    audit.record(action, actor=Actor.from_request(request), stage=AuditEvent.Stage.EVENT, params=params, message=message)


def _remove_grants(request, **grantee) -> None:
    """Remove (and audit) every grant of a user or group about to be deleted."""
    for grant in Grant.objects.filter(**grantee).select_related("role", "user", "group"):
        grants.remove_grant(grant, actor=Actor.from_request(request))


admin.site.unregister(User)
admin.site.unregister(AuthGroup)


@admin.register(User)
class AuditedUserAdmin(SuperusersOnly, UserAdmin):
    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        user = form.instance
        changed = [f for f in form.changed_data if f in WATCHED]
        if change and not changed:
            return
        params = {"user": user.username, "changed": changed, "groups": sorted(user.groups.values_list("name", flat=True))}
        params.update({flag: getattr(user, flag) for flag in ("is_active", "is_staff", "is_superuser")})
        if change:
            details = ", ".join(f"{f} → {getattr(user, f)}" if f.startswith("is_") else f for f in changed)
            _record(request, "user.change", f"User {user.username} changed: {details}.", params)
        else:
            _record(request, "user.add", f"User {user.username} created.", params)

    def user_change_password(self, request, id, form_url=""):
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:
            user = User.objects.filter(pk=id).first()
            name = user.username if user else f"#{id}"
            _record(request, "user.password", f"Password of user {name} set by an admin.", {"user": name})
        return response

    def delete_model(self, request, obj):
        name = obj.username
        _remove_grants(request, user=obj)
        super().delete_model(request, obj)
        _record(request, "user.remove", f"User {name} deleted (their audit rows keep the name).", {"user": name})

    def delete_queryset(self, request, queryset):
        for user in queryset:
            self.delete_model(request, user)


@admin.register(AuthGroup)
class AuditedGroupAdmin(SuperusersOnly, GroupAdmin):
    def save_model(self, request, obj, form, change):
        before = AuthGroup.objects.filter(pk=obj.pk).values_list("name", flat=True).first() if change else None
        super().save_model(request, obj, form, change)
        if not change:
            _record(request, "group.add", f"Group {obj.name} created.", {"group": obj.name})
        elif before != obj.name:
            _record(request, "group.change", f"Group {before} renamed {obj.name}.", {"group": obj.name, "old_name": before})

    def delete_model(self, request, obj):
        name = obj.name
        _remove_grants(request, group=obj)
        super().delete_model(request, obj)
        _record(request, "group.remove", f"Group {name} deleted.", {"group": name})

    def delete_queryset(self, request, queryset):
        for group in queryset:
            self.delete_model(request, group)
