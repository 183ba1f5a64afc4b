"""The VM inventory, HTML and JSON, against the real hypervisor."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from core import hypervisor
from tests.conftest import PASSWORD, api_for

pytestmark = pytest.mark.django_db


def test_api_lists_running_and_shutoff_vms(api, make_vm):
    running = make_vm(running=True)
    stopped = make_vm()
    vms = {vm["name"]: vm for vm in api.get("/api/vms").json()}
    assert vms[running.name]["state"] == "running"
    assert vms[stopped.name]["state"] == "shutoff"
    assert vms[stopped.name]["memory"] == 64
    assert vms[stopped.name]["vcpus"] == 1
    assert vms[stopped.name]["uuid"] == stopped.uuid
    assert vms[stopped.name]["disks"][0]["format"] == "qcow2"
    assert vms[stopped.name]["snapshots"] == 0
    assert vms[stopped.name]["current-snapshot"] == ""


def test_api_vm_detail_has_every_field(api, running_vm):
    hypervisor.create_snapshot(running_vm.uuid, "first")
    data = api.get(f"/api/vms/{running_vm.name}").json()
    assert set(data) == {"name", "uuid", "state", "vcpus", "memory", "disks", "snapshots", "current-snapshot"}
    assert data["state"] == "running"
    assert data["snapshots"] == 1
    assert data["current-snapshot"] == "first"
    disk = data["disks"][0]
    assert disk["target"] == "vda" and disk["source"].endswith(".qcow2")


def test_raw_disk_shows_its_format(api, make_vm):
    raw = make_vm(disk_format="raw")
    assert api.get(f"/api/vms/{raw.name}").json()["disks"][0]["format"] == "raw"


def test_page_shows_vms_with_formats(client, admin_user, make_vm):
    raw = make_vm(disk_format="raw")
    running = make_vm(running=True)
    client.force_login(admin_user)
    html = client.get("/").content.decode()
    assert f'href="/vms/{raw.name}/"' in html
    assert "raw" in html and "qcow2" in html
    assert "running" in html
    detail = client.get(f"/vms/{running.name}/")
    assert detail.status_code == 200
    assert running.uuid in detail.content.decode()


def test_unknown_vm_is_404_with_a_reason(api, client, admin_user):
    response = api.get("/api/vms/no-such-vm-here")
    assert response.status_code == 404
    assert response.json() == {"code": 404, "reason": "There is no VM named 'no-such-vm-here' that you can see."}
    client.force_login(admin_user)
    page = client.get("/vms/no-such-vm-here/")
    assert page.status_code == 404
    assert "no-such-vm-here" in page.content.decode()


def test_anonymous_is_refused(client, vm):
    page = client.get("/")
    assert page.status_code == 302 and page["Location"].startswith("/login/")
    assert client.get(f"/vms/{vm.name}/").status_code == 302
    response = APIClient().get("/api/vms")
    assert response.status_code == 401
    assert response.json()["code"] == 401
    assert "Log in" in response.json()["reason"]


def test_basic_and_token_authentication(admin_user, vm):
    from rest_framework.authtoken.models import Token

    basic = APIClient()
    basic.credentials(HTTP_AUTHORIZATION="Basic " + __import__("base64").b64encode(f"root-admin:{PASSWORD}".encode()).decode())
    assert basic.get(f"/api/vms/{vm.name}").status_code == 200
    token = Token.objects.create(user=admin_user)
    tok = APIClient()
    tok.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert tok.get(f"/api/vms/{vm.name}").status_code == 200
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Basic " + __import__("base64").b64encode(b"root-admin:nope").decode())
    assert wrong.get("/api/vms").status_code == 401


def test_login_page_logs_in(client, admin_user):
    page = client.get("/login/")
    assert "Username" in page.content.decode() and "Password" in page.content.decode()
    response = client.post("/login/", {"username": "root-admin", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_inventory_queries_and_libvirt_calls_are_bounded(api, make_vm):
    for _ in range(2):
        vm = make_vm()
        hypervisor.create_snapshot(vm.uuid, "s1")
    with CaptureQueriesContext(connection) as few_q, hypervisor.count_calls() as few_calls:
        few = api.get("/api/vms").json()
    for _ in range(3):
        vm = make_vm()
        hypervisor.create_snapshot(vm.uuid, "s1")
        hypervisor.create_snapshot(vm.uuid, "s2")
    with CaptureQueriesContext(connection) as many_q, hypervisor.count_calls() as many_calls:
        many = api.get("/api/vms").json()
    assert len(many) == len(few) + 3
    # Same number of DB queries whatever the number of VMs.
    assert len(many_q) == len(few_q) <= 3
    # A fixed number of libvirt calls per VM, none per snapshot.
    per_vm = (sum(many_calls.values()) - sum(few_calls.values())) / 3
    assert per_vm <= 5
    assert "virDomainSnapshot.getXMLDesc" not in many_calls


def test_api_users_see_only_granted_vms(make_user, make_vm):
    mine, other = make_vm(), make_vm()
    viewer = make_user("vic", role="viewer", vm=mine)
    names = [vm["name"] for vm in api_for(viewer).get("/api/vms").json()]
    assert mine.name in names and other.name not in names
    assert api_for(viewer).get(f"/api/vms/{other.name}").status_code == 404


def test_first_admin_from_environment(monkeypatch):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "first-admin")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-pass-phrase-1")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "first@example.com")
    call_command("createsuperuser", interactive=False, verbosity=0)
    user = get_user_model().objects.get(username="first-admin")
    assert user.is_superuser and user.check_password("a-long-pass-phrase-1")
