"""manage.py demo_vms: its snapshots are recorded as the demo set-up's, not as found outside the app."""

import secrets
from io import StringIO

import pytest
from django.core.management import call_command

from core import hypervisor
from core.tiny import remove_vm
from snapshots.models import SnapshotRecord
from vms.management.commands import demo_vms

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_vm(monkeypatch, settings, image_dir):
    """The command, making one test VM of its own instead of the demo-* ones."""
    name = f"vstest-{secrets.token_hex(4)}"
    monkeypatch.setattr(demo_vms, "DEMO", [(name, False)])
    settings.VM_IMAGE_DIR = str(image_dir)
    yield name
    remove_vm(name)


def test_demo_snapshots_are_recorded_as_made_by_the_demo_set_up(client, admin_user, demo_vm):
    call_command("demo_vms", "--snapshots", stdout=StringIO())
    uuid = hypervisor.get_vm(demo_vm).uuid
    rows = {r.name: r for r in SnapshotRecord.objects.filter(vm_uuid=uuid)}
    assert set(rows) == {"installed", "configured"}
    assert all(r.origin == SnapshotRecord.Origin.APP and r.created_by_username == "demo set-up" for r in rows.values())
    assert rows["configured"].parent == rows["installed"]

    client.force_login(admin_user)
    page = client.get(f"/vms/{demo_vm}/").content.decode()
    assert "by demo set-up" in page and "made outside the app" not in page
    history = client.get(f"/vms/{demo_vm}/history").content.decode()
    assert "taken by demo set-up" in history and "made outside the app" not in history
    assert set(SnapshotRecord.objects.filter(vm_uuid=uuid).values_list("name", flat=True)) == {"installed", "configured"}
