"""The API never asks a browser for HTTP Basic credentials, and Basic credentials a
browser sends on another site's behalf change nothing (issue 11: CSRF through cached
Basic credentials); tokens, scripts' Basic and CSRF-checked sessions work as before."""

import base64

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core import hypervisor
from operations.authentication import ScriptBasicAuthentication
from operations.models import AuditEvent, Operation
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

EVIL = "https://evil.example"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def basic_header(username: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def basic(username: str, password: str = PASSWORD) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic_header(username, password))
    return client


def error(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.content[:300])
    data = response.json()
    assert set(data) == {"code", "reason"} and data["code"] == status, data
    return data["reason"]


@pytest.fixture
def snap_vm(vm):
    hypervisor.create_snapshot(vm.uuid, "s1")
    return vm


# ---------------------------------------------------------------------------
# No Basic challenge


def test_an_api_401_never_asks_for_basic(make_user):
    make_user("olga")
    wrong_basic = basic("olga", "wrong")
    wrong_token = APIClient()
    wrong_token.credentials(HTTP_AUTHORIZATION="Token nope")
    answers = [
        APIClient().get("/api/vms"),
        APIClient().post("/api/vms/x/start"),
        APIClient().get("/api/tasks"),
        wrong_basic.get("/api/vms"),
        wrong_basic.post("/api/vms/x/start"),
        wrong_token.get("/api/vms"),
        # The API docs are an HTML page a browser opens: no prompt there either.
        wrong_basic.get("/api/docs/"),
    ]
    for response in answers:
        assert response.status_code == 401, response.request["PATH_INFO"]
        assert response["WWW-Authenticate"] == "Token", response.request["PATH_INFO"]


def test_no_page_asks_for_basic(client, admin_user):
    pages = ["/", "/login/", "/admin/", "/api/docs/", "/api/redoc/", "/audit/"]
    for path in pages:
        assert "WWW-Authenticate" not in client.get(path), path
    client.force_login(admin_user)
    for path in pages:
        assert "WWW-Authenticate" not in client.get(path), path


def test_basic_is_accepted_last_and_never_asked_for():
    classes = settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]
    assert classes == [
        "operations.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "operations.authentication.ScriptBasicAuthentication",
    ]
    assert ScriptBasicAuthentication().authenticate_header(None) is None


# ---------------------------------------------------------------------------
# Basic credentials from another site's page


def test_basic_from_another_site_changes_nothing_and_is_audited(admin_user, snap_vm):
    name = snap_vm.name
    requests = [
        ("post", f"/api/vms/{name}/start", "vm.start"),
        ("post", f"/api/vms/{name}/snapshots/s1/revert", "snapshot.revert"),
        ("post", f"/api/vms/{name}/clone", "vm.clone"),
        ("delete", f"/api/vms/{name}/snapshots/s1", "snapshot.delete"),
        ("delete", f"/api/vms/{name}", "vm.delete"),
    ]
    client = basic(admin_user.username)
    for method, path, action in requests:
        # A form another site posts has no body the API reads: refused before it is parsed.
        reason = error(getattr(client, method)(path, HTTP_ORIGIN=EVIL), 403)
        assert "another site" in reason and EVIL in reason
        event = AuditEvent.objects.get(action=action)
        assert event.outcome == "denied" and event.client_ip == "127.0.0.1" and event.message == reason
        assert event.params["path"] == path and event.vm_name == name
    assert Operation.objects.count() == 0
    after = hypervisor.get_vm(snap_vm.uuid)
    assert after.state == snap_vm.state and hypervisor.snapshot_names(snap_vm.uuid)[0] == ["s1"]
    # Refused before the password was looked at: no login on the record.
    assert not AuditEvent.objects.filter(action="login").exists()


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_SEC_FETCH_SITE": "cross-site"},
        {"HTTP_ORIGIN": "null"},  # a sandboxed frame, a data: URL
        {"HTTP_ORIGIN": "http://testserver.evil.example"},
        {"HTTP_ORIGIN": "https://testserver"},  # another scheme is another origin
    ],
)
def test_other_signs_of_another_site_are_refused_too(admin_user, vm, headers):
    error(basic(admin_user.username).post(f"/api/vms/{vm.name}/start", **headers), 403)
    assert Operation.objects.count() == 0
    assert AuditEvent.objects.get(action="vm.start").outcome == "denied"


def test_a_wrong_password_from_another_site_is_no_failed_login(make_user, vm):
    # A hostile page cannot use visitors' browsers to guess passwords or to lock accounts.
    make_user("pia")
    error(basic("pia", "guess").post(f"/api/vms/{vm.name}/start", HTTP_ORIGIN=EVIL), 403)
    assert not AuditEvent.objects.filter(action="login").exists()


# ---------------------------------------------------------------------------
# What keeps working


def test_basic_from_a_script_still_works(admin_user, vm, settings):
    client = basic(admin_user.username)
    assert client.get("/api/vms").status_code == 200
    # Reading is not changing: another site's page cannot read the answer anyway.
    assert client.get("/api/vms", HTTP_ORIGIN=EVIL, HTTP_SEC_FETCH_SITE="cross-site").status_code == 200
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.virtsnap.example"]
    for headers in (
        {},  # curl
        {"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "same-origin"},
        {"HTTP_ORIGIN": "https://ops.virtsnap.example"},
    ):
        response = client.post(f"/api/vms/{vm.name}/snapshots", {"name": "before"}, format="json", **headers)
        assert response.status_code == 202, (headers, response.content)
        Operation.objects.all().delete()


def test_a_token_still_works(admin_user, vm):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=admin_user).key}")
    assert client.get("/api/vms").status_code == 200
    assert client.post(f"/api/vms/{vm.name}/snapshots", {"name": "t"}, format="json").status_code == 202
    Operation.objects.all().delete()
    # A browser never sends a token on its own, so where the request comes from does not matter.
    response = client.post(f"/api/vms/{vm.name}/snapshots", {"name": "t"}, format="json", HTTP_ORIGIN=EVIL)
    assert response.status_code == 202


def test_a_session_post_without_csrf_token_still_fails(admin_user, vm):
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=admin_user.username, password=PASSWORD)
    response = client.post(f"/api/vms/{vm.name}/snapshots", {"name": "forged"}, content_type="application/json")
    assert "CSRF" in error(response, 403)
    assert AuditEvent.objects.get(action="snapshot.create").outcome == "denied"
    assert Operation.objects.count() == 0


def test_cached_basic_credentials_do_not_excuse_a_session_from_csrf(admin_user, vm):
    # A browser logged in on the page that also holds Basic credentials sends both: the
    # session is checked first, and its CSRF check applies, wherever the request came from.
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=basic_header(admin_user.username))
    client.force_login(admin_user)
    response = client.post(f"/api/vms/{vm.name}/snapshots", {"name": "forged"}, content_type="application/json")
    assert "CSRF" in error(response, 403)
    assert Operation.objects.count() == 0
