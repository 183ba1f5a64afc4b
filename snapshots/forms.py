"""Forms of the VM page.

They only carry what the user typed back to the page: the rules (name syntax,
name taken, description length, raw disks) live in ``snapshots.services``, which
checks them and audits every refusal. A form must not refuse input the service
would never see, or that refusal would go unaudited.
"""

from django import forms

from snapshots import services
from vms.errors import AppError, Conflict, Invalid


class SnapshotForm(forms.Form):
    name = forms.CharField(required=False, label="Name")
    description = forms.CharField(required=False, strip=False, label="Description", widget=forms.Textarea(attrs={"rows": 2}))

    def show_error(self, exc: AppError) -> None:
        """Put a service's refusal at the field it concerns (or above the form)."""
        self.add_error(self.field_for(exc), exc.message)

    def field_for(self, exc: AppError) -> str | None:
        data = self.cleaned_data if hasattr(self, "cleaned_data") else {}
        name = data.get("name") or ""
        if isinstance(exc, Invalid):
            # Which rule failed: run the service's own checks on what was typed.
            for field, check in (("name", services.validate_name), ("description", services.validate_description)):
                value = data.get(field)
                if field == "name" and not value:
                    continue
                try:
                    check(value)
                except Invalid as failed:
                    if failed.message == exc.message:
                        return field
        if isinstance(exc, Conflict) and name and repr(name) in exc.message:
            return "name"  # the name is taken
        return None


class SnapshotCreateForm(SnapshotForm):
    pass


class SnapshotEditForm(SnapshotForm):
    def field_for(self, exc: AppError) -> str | None:
        if isinstance(exc, Invalid) and not (self.cleaned_data.get("name") or ""):
            return "name"  # an empty name: the service says it is invalid
        return super().field_for(exc)
