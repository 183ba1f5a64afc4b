"""The grants pages, for admins: list, add, remove (POST → redirect → GET), through vms.grants."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from access import policy
from access.models import Grant, Role
from core import hypervisor
from core.errors import AppError
from operations.audit import Actor
from vms import grants


class GrantForm(forms.Form):
    grantee = forms.ChoiceField(label="To")
    role = forms.ModelChoiceField(queryset=Role.objects.all(), to_field_name="name", empty_label=None)
    vm = forms.ChoiceField(label="On", required=False)

    def __init__(self, *args, vms: list[hypervisor.VMInfo], **kwargs):
        super().__init__(*args, **kwargs)
        users = get_user_model().objects.filter(is_active=True).order_by("username")
        self.fields["grantee"].choices = [
            ("", "Choose a user or a group"),
            ("Users", [(f"user:{u.username}", u.username) for u in users]),
            ("Groups", [(f"group:{g.name}", g.name) for g in Group.objects.order_by("name")]),
        ]
        self.fields["vm"].choices = [("", "All VMs")] + [(vm.uuid, vm.name) for vm in vms]

    def clean(self):
        data = super().clean()
        kind, _, name = (data.get("grantee") or "").partition(":")
        try:
            data["target"] = {"user": grants.get_user(name)} if kind == "user" else {"group": grants.get_group(name)}
            if data.get("role") is not None:
                grants.resolve_scope(data["role"], data.get("vm") or "")
        except AppError as exc:
            raise forms.ValidationError(exc.message) from None
        return data


def _require_admin(request, action: str | None = None) -> Actor:
    actor = Actor.from_request(request)
    if action:
        grants.check_admin(actor, action)  # audits a refused change
    else:
        policy.require_admin(request.user)
    return actor


def _page(request, form: GrantForm, vms: list[hypervisor.VMInfo], status: int = 200):
    names = {vm.uuid: vm.name for vm in vms}
    rows = []
    for grant in Grant.objects.select_related("role", "user", "group").order_by("user__username", "group__name", "role__name"):
        now = names.get(grant.vm_uuid) if grant.vm_uuid else None
        rows.append({"grant": grant, "vm_now": now, "vm_gone": bool(grant.vm_uuid) and now is None})
    context = {
        "form": form,
        "rows": rows,
        "roles": Role.objects.all(),
        "admins": get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("username"),
    }
    return render(request, "vms/grants.html", context, status=status)


def _inventory() -> list[hypervisor.VMInfo]:
    try:
        return hypervisor.list_vms()
    except AppError:
        return []  # libvirtd down: grants on all VMs can still be managed


@login_required
@require_GET
def grant_list(request):
    _require_admin(request)
    vms = _inventory()
    return _page(request, GrantForm(vms=vms), vms)


@login_required
@require_POST
def grant_add(request):
    actor = _require_admin(request, "grant.add")
    vms = _inventory()
    form = GrantForm(request.POST, vms=vms)
    if not form.is_valid():
        return _page(request, form, vms, status=400)
    data = form.cleaned_data
    try:
        grant, created = grants.grant_role(data["role"], vm=data.get("vm") or "", actor=actor, **data["target"])
    except AppError as exc:
        form.add_error(None, exc.message)
        return _page(request, form, vms, status=exc.status)
    if created:
        messages.success(request, f"Granted {grant.role.name} to {grant.grantee} on {grant.scope}.")
    else:
        messages.info(request, f"Already granted: {grant.role.name} to {grant.grantee} on {grant.scope}.")
    return redirect("grant-list")


@login_required
@require_POST
def grant_remove(request, grant_id: int):
    actor = _require_admin(request, "grant.remove")
    grant = get_object_or_404(Grant.objects.select_related("role", "user", "group"), pk=grant_id)
    grants.remove_grant(grant, actor=actor)
    messages.success(request, f"Revoked {grant.role.name} from {grant.grantee} on {grant.scope}.")
    return redirect("grant-list")
