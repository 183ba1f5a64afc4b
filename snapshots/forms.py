"""Forms of the VM page.

They only carry what the user typed back to the page: the rules (name syntax,
name taken, description length, raw disks) live in ``snapshots.services``, which
checks them and audits every refusal. A form must not refuse input the service
would never see, or that refusal would go unaudited.
"""

from django import forms

from core.errors import AppError
from core.names import SNAPSHOT_NAME


class SnapshotForm(forms.Form):
    # The help says the rule the service enforces, in the words of its error message.
    name = forms.CharField(required=False, label="Name", help_text=f"Use {SNAPSHOT_NAME.text}.")
    description = forms.CharField(required=False, strip=False, label="Description", widget=forms.Textarea(attrs={"rows": 2}))

    def show_error(self, exc: AppError) -> None:
        """Put a service's refusal at the field it concerns (or above the form)."""
        self.add_error(self.field_for(exc), exc.message)

    def field_for(self, exc: AppError) -> str | None:
        return exc.field if exc.field in self.fields else None


class SnapshotCreateForm(SnapshotForm):
    pass


class SnapshotEditForm(SnapshotForm):
    pass
