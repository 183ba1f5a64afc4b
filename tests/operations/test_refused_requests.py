"""Page requests refused before any view runs are on the record too."""

import pytest
from django.test import Client

from operations.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_anonymous_post_is_audited_as_denied(client, vm):
    response = client.post(f"/vms/{vm.name}/snapshots/", {"name": "sneaky"})
    assert response.status_code == 302 and "/login/" in response["Location"]
    event = AuditEvent.objects.get(action="http.post")
    assert event.outcome == "denied" and event.params["path"] == f"/vms/{vm.name}/snapshots/"
    assert event.client_ip == "127.0.0.1"


def test_csrf_failure_is_audited(admin_user, vm):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post(f"/vms/{vm.name}/snapshots/", {"name": "forged"})
    assert response.status_code == 403
    event = AuditEvent.objects.get(action="http.post")
    assert event.outcome == "denied" and "CSRF" in event.message and event.username == "root-admin"


def test_login_page_posts_are_not_double_counted(client):
    client.post("/login/", {"username": "nobody", "password": "wrong"})
    assert not AuditEvent.objects.filter(action="http.post").exists()
