"""Login hardening: failed logins rate limited per account and address, and per address
(login page, admin login, API HTTP Basic alike), every attempt audited; sessions expire;
strong passwords."""

import base64
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from operations import login_guard
from operations.models import AuditEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed logins for this account from this address; try again in"
ADDRESS_LOCKED = "Too many failed logins from this address; try again in"
A, B = "192.0.2.10", "198.51.100.20"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """What is tested is the guard, not the hashing: keep hundreds of attempts quick."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def login(client, username, password=PASSWORD):
    return client.post("/login/", {"username": username, "password": password})


def basic(username, password=PASSWORD, ip="127.0.0.1"):
    client = APIClient(REMOTE_ADDR=ip)
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{username}:{password}".encode()).decode())
    return client


def failures(**match):
    return AuditEvent.objects.filter(action="login", outcome="failed", **match).count()


def test_wrong_and_right_logins_are_audited(client, make_user):
    make_user("alice")
    assert login(client, "alice", "wrong").status_code == 200
    assert login(client, "alice").status_code == 302
    rows = list(AuditEvent.objects.filter(action="login").order_by("id"))
    assert [(r.username, r.outcome, r.client_ip) for r in rows] == [
        ("alice", "failed", "127.0.0.1"),
        ("alice", "success", "127.0.0.1"),
    ]


def test_five_failures_lock_the_account_from_that_address(client, make_user):
    make_user("bob")
    for _ in range(login_guard.LIMIT_PER_ACCOUNT):
        page = login(client, "bob", "guess")
        assert page.status_code == 200 and LOCKED not in page.content.decode()
    # Locked: even the right password is refused, with the reason and when to come back,
    # and 429 with Retry-After, as over HTTP Basic.
    page = login(client, "bob")
    assert page.status_code == 429
    assert 14 * 60 < int(page["Retry-After"]) <= 15 * 60
    html = page.content.decode()
    assert LOCKED in html and "15 minutes" in html
    assert "_auth_user_id" not in client.session
    denied = AuditEvent.objects.get(action="login", outcome="denied")
    assert denied.username == "bob" and denied.client_ip == "127.0.0.1" and LOCKED in denied.message
    assert denied.params["lock"] == "account"
    # A refused attempt does not count as one more failure (the lock does not grow).
    assert failures(username="bob") == login_guard.LIMIT_PER_ACCOUNT


def test_the_lock_is_per_account(client, make_user):
    make_user("carol")
    make_user("dave")
    for _ in range(login_guard.LIMIT_PER_ACCOUNT):
        login(client, "carol", "guess")
    assert LOCKED in login(client, "carol").content.decode()
    assert login(client, "dave").status_code == 302


def test_unknown_usernames_are_locked_alike(client):
    for _ in range(login_guard.LIMIT_PER_ACCOUNT):
        login(client, "nobody-here", "guess")
    assert LOCKED in login(client, "nobody-here", "guess").content.decode()


def test_the_lock_ends_when_failures_age_out(client, make_user, monkeypatch):
    make_user("erin")
    for _ in range(login_guard.LIMIT_PER_ACCOUNT):
        login(client, "erin", "guess")
    assert LOCKED in login(client, "erin").content.decode()
    later = timezone.now() + login_guard.WINDOW + timedelta(seconds=1)
    monkeypatch.setattr(login_guard, "timezone", SimpleNamespace(now=lambda: later))
    assert login(client, "erin").status_code == 302


def test_minutes_left_are_counted_from_the_oldest_failure_in_the_window(make_user):
    now = timezone.now()
    message, seconds = login_guard.lock_message(login_guard.Lock(now + timedelta(minutes=4, seconds=10), "account"), now=now)
    assert message == LOCKED + " 5 minutes." and seconds == 250
    assert login_guard.lock_message(login_guard.Lock(now + timedelta(seconds=20), "address"), now=now)[0] == (
        ADDRESS_LOCKED + " 1 minute."
    )


def test_many_accounts_from_one_address_lock_the_address(make_user):
    make_user("fay")
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for i in range(login_guard.LIMIT_PER_ADDRESS - 1):
        assert LOCKED not in login(attacker, f"user{i}", "guess").content.decode()
    login(attacker, "one-too-many", "guess")
    # The per-address throttle: every account, even one that never failed, from this address.
    page = login(attacker, "fay")
    assert page.status_code == 429 and ADDRESS_LOCKED in page.content.decode()
    assert AuditEvent.objects.get(action="login", outcome="denied").params["lock"] == "address"
    # Fay, from her own address, is not locked out.
    assert login(Client(REMOTE_ADDR="198.51.100.2"), "fay").status_code == 302


def test_the_address_throttle_applies_over_basic_too(make_user):
    make_user("gil", role="auditor")
    for i in range(login_guard.LIMIT_PER_ADDRESS):
        basic(f"user{i}", "guess", ip=A).get("/api/vms")
    response = basic("gil", ip=A).get("/api/vms")
    assert response.status_code == 429 and response.json()["reason"].startswith(ADDRESS_LOCKED)
    assert basic("gil", ip=B).get("/api/vms").status_code == 200


def test_an_account_locked_from_one_address_logs_in_from_another(make_user):
    make_user("alice")
    from_a, from_b = Client(REMOTE_ADDR=A), Client(REMOTE_ADDR=B)
    for _ in range(login_guard.LIMIT_PER_ACCOUNT):
        login(from_a, "alice", "guess")
    assert LOCKED in login(from_a, "alice").content.decode()
    # Anyone can type her name: that must not keep alice out where nobody guessed.
    assert login(from_b, "alice").status_code == 302
    assert AuditEvent.objects.filter(action="login", outcome="success", username="alice", client_ip=B).exists()
    # ...and the lock from A still holds.
    assert LOCKED in login(Client(REMOTE_ADDR=A), "alice").content.decode()


def test_a_locked_out_admin_gets_in_from_an_address_without_failures(make_user):
    make_user("root", is_staff=True, is_superuser=True)
    attacker = Client(REMOTE_ADDR=A)
    for _ in range(login_guard.LIMIT_PER_ACCOUNT):
        attacker.post("/admin/login/", {"username": "root", "password": "guess"})
    assert LOCKED in attacker.post("/admin/login/", {"username": "root", "password": PASSWORD}).content.decode()
    response = Client(REMOTE_ADDR=B).post("/admin/login/", {"username": "root", "password": PASSWORD})
    assert response.status_code == 302


def test_the_admin_page_and_basic_see_the_same_rules(make_user):
    make_user("hugo", is_staff=True, is_superuser=True)
    # Failures over Basic from A lock the admin page from A, not from B...
    for _ in range(login_guard.LIMIT_PER_ACCOUNT):
        assert basic("hugo", "guess", ip=A).get("/api/vms").status_code == 401
    admin_login = {"username": "hugo", "password": PASSWORD}
    assert LOCKED in Client(REMOTE_ADDR=A).post("/admin/login/", admin_login).content.decode()
    assert Client(REMOTE_ADDR=B).post("/admin/login/", admin_login).status_code == 302
    # ...and failures on the admin page from B lock Basic from B, not from a third address.
    for _ in range(login_guard.LIMIT_PER_ACCOUNT):
        Client(REMOTE_ADDR=B).post("/admin/login/", {"username": "hugo", "password": "guess"})
    assert basic("hugo", ip=B).get("/api/vms").status_code == 429
    assert basic("hugo", ip="203.0.113.99").get("/api/vms").status_code == 200


def test_api_basic_auth_is_locked_too(make_user, vm):
    make_user("gus", role="viewer", vm=vm)
    for _ in range(login_guard.LIMIT_PER_ACCOUNT):
        assert basic("gus", "guess").get("/api/vms").status_code == 401
    response = basic("gus").get("/api/vms")
    assert response.status_code == 429
    assert response.json()["code"] == 429 and response.json()["reason"].startswith(LOCKED)
    assert int(response["Retry-After"]) > 0
    assert AuditEvent.objects.filter(action="login", outcome="denied", username="gus").count() == 1
    # A mutating request refused so is on the record as well.
    assert basic("gus").post(f"/api/vms/{vm.name}/snapshots", {}, format="json").status_code == 429
    assert AuditEvent.objects.filter(action="snapshot.create", outcome="failed", username="").exists()
    # From another address, gus is not locked out.
    assert basic("gus", ip=B).get("/api/vms").status_code == 200


def test_failures_on_the_page_count_for_the_api(client, make_user):
    make_user("hal")
    for _ in range(login_guard.LIMIT_PER_ACCOUNT):
        login(client, "hal", "guess")
    assert basic("hal").get("/api/vms").status_code == 429


def test_admin_login_is_guarded(make_user):
    make_user("ida", is_staff=True, is_superuser=True)
    client = Client()
    for _ in range(login_guard.LIMIT_PER_ACCOUNT):
        client.post("/admin/login/", {"username": "ida", "password": "guess"})
    page = client.post("/admin/login/", {"username": "ida", "password": PASSWORD})
    assert page.status_code == 200 and LOCKED in page.content.decode()


def test_the_backend_is_wired():
    assert settings.AUTHENTICATION_BACKENDS == ["operations.login_guard.GuardedModelBackend"]


# ---------------------------------------------------------------------------
# Sessions and passwords


def test_sessions_expire(client, make_user):
    make_user("jay")
    assert 0 < settings.SESSION_COOKIE_AGE <= 24 * 3600
    assert login(client, "jay").status_code == 302
    assert client.get("/").status_code == 200
    expiry = client.session.get_expiry_date()
    assert timedelta(0) < expiry - timezone.now() <= timedelta(seconds=settings.SESSION_COOKIE_AGE)
    Session.objects.filter(session_key=client.session.session_key).update(expire_date=timezone.now() - timedelta(seconds=1))
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.parametrize("password", ["short1", "password123", "12345678901", "kimberly-user"])
def test_weak_passwords_are_refused(make_user, password):
    user = make_user("kimberly-user")
    with pytest.raises(ValidationError):
        validate_password(password, user)


def test_a_good_password_passes(make_user):
    validate_password(PASSWORD, make_user("leo"))
