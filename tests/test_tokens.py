"""API tokens for people (issue 11): made, listed and revoked by their owner on /tokens/,
kept only as a hash, shown once; expired, revoked and disabled users' tokens refused
with the reason; DRF's authtoken keys keep working; every change and refusal audited."""

import hashlib
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from access.models import ApiToken
from operations.authentication import ApiTokenAuthentication
from operations.models import AuditEvent

pytestmark = pytest.mark.django_db

KEY = re.compile(r"vs_[A-Za-z0-9_-]{43}")


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


def page_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_token(client: Client, name: str = "backup", days="") -> str:
    """Make a token on the page; the key it shows."""
    response = client.post("/tokens/", {"name": name, "days": days})
    assert response.status_code == 201, response.content[:500]
    keys = set(KEY.findall(response.content.decode()))
    assert len(keys) == 1, keys
    return keys.pop()


def api_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def refused(response, words: str) -> str:
    assert response.status_code == 401, (response.status_code, response.content[:300])
    assert response["WWW-Authenticate"] == "Token"
    data = response.json()
    assert set(data) == {"code", "reason"} and data["code"] == 401
    assert words in data["reason"], data["reason"]
    return data["reason"]


def test_a_token_made_on_the_page_works_on_the_api(alice):
    key = make_token(page_for(alice), days="30")
    assert api_with(key).get("/api/tasks").status_code == 200
    token = ApiToken.objects.get()
    assert token.user == alice and token.name == "backup" and key.startswith(token.prefix)
    assert timedelta(days=29, hours=23) < token.expires - timezone.now() <= timedelta(days=30)
    event = AuditEvent.objects.get(action="token.add")
    assert event.outcome == "success" and event.username == "alice"
    assert event.params["name"] == "backup" and event.params["prefix"] == token.prefix
    assert key not in str(event.params) + event.message


def test_the_key_is_shown_once_and_never_stored_in_clear(alice):
    client = page_for(alice)
    response = client.post("/tokens/", {"name": "ci", "days": ""})
    assert response.status_code == 201 and "no-store" in response["Cache-Control"]
    assert "will not be shown again" in response.content.decode()
    key = KEY.search(response.content.decode()).group()
    # In no URL, session or cookie: the answer is the page itself.
    assert "Location" not in response
    assert key not in str(dict(client.session)) and key not in str(client.cookies)
    listing = client.get("/tokens/").content.decode()
    token = ApiToken.objects.get()
    assert "ci" in listing and token.prefix in listing and key not in listing and token.expires is None
    # The database holds its SHA-256 only: no column of any table holds the key.
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')
            assert not any(key in str(value) for row in cursor.fetchall() for value in row), table


def test_last_used_is_set_at_most_once_a_minute(alice):
    key = make_token(page_for(alice))
    token = ApiToken.objects.get()
    assert token.last_used is None
    api = api_with(key)
    assert api.get("/api/tasks").status_code == 200
    token.refresh_from_db()
    first = token.last_used
    assert first is not None and timezone.now() - first < timedelta(seconds=10)
    assert api.get("/api/tasks").status_code == 200
    token.refresh_from_db()
    assert token.last_used == first
    ApiToken.objects.update(last_used=first - timedelta(minutes=2))
    assert api.get("/api/tasks").status_code == 200
    token.refresh_from_db()
    assert token.last_used > first


def test_an_expired_token_is_401_saying_so(alice):
    key = make_token(page_for(alice), days="1")
    ApiToken.objects.update(expires=timezone.now() - timedelta(seconds=1))
    reason = refused(api_with(key).get("/api/tasks"), "expired")
    assert "/tokens/" in reason
    # A refused change is on the record, and nothing shows the key.
    refused(api_with(key).post("/api/tasks/1/cancel"), "expired")
    assert AuditEvent.objects.get(action="task.cancel").outcome == "denied"
    assert "expired" in page_for(alice).get("/tokens/").content.decode()


def test_a_revoked_token_is_401_saying_so(alice):
    client = page_for(alice)
    key = make_token(client)
    token = ApiToken.objects.get()
    response = client.post(f"/tokens/{token.pk}/revoke")
    assert response.status_code == 302 and response["Location"] == "/tokens/"
    refused(api_with(key).get("/api/tasks"), "revoked")
    listing = client.get("/tokens/").content.decode()
    assert "Revoked token backup" in listing and token.prefix not in listing.split("Your tokens")[1]
    event = AuditEvent.objects.get(action="token.remove")
    assert event.outcome == "success" and event.params["name"] == "backup" and event.params["prefix"] == token.prefix
    # Revoked twice: there is nothing left to revoke.
    assert client.post(f"/tokens/{token.pk}/revoke").status_code == 404
    # Its name is free again.
    make_token(client)


def test_another_user_cannot_revoke_yours_nor_see_them(alice, bob):
    key = make_token(page_for(alice), name="alices-secret-job")
    token = ApiToken.objects.get()
    mallory = page_for(bob)
    assert "alices-secret-job" not in mallory.get("/tokens/").content.decode()
    assert mallory.post(f"/tokens/{token.pk}/revoke").status_code == 404
    assert mallory.post("/tokens/99999/revoke").status_code == 404
    token.refresh_from_db()
    assert token.revoked is None and api_with(key).get("/api/tasks").status_code == 200
    denied = AuditEvent.objects.filter(action="token.remove", outcome="denied", username="bob")
    assert denied.count() == 2
    # Bob may use the same name for a token of his own.
    make_token(mallory, name="alices-secret-job")


def test_a_disabled_users_token_fails(alice):
    key = make_token(page_for(alice))
    alice.is_active = False
    alice.save()
    refused(api_with(key).get("/api/tasks"), "disabled")


def test_an_unknown_key_is_invalid(alice):
    make_token(page_for(alice))
    refused(api_with("vs_" + "x" * 43).get("/api/tasks"), "Invalid token")


def test_the_page_forms_need_csrf(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/tokens/", {"name": "forged"}).status_code == 403
    assert not ApiToken.objects.exists()
    # With the page's CSRF token it works.
    client.get("/tokens/")
    csrf = client.cookies["csrftoken"].value
    assert client.post("/tokens/", {"name": "mine", "csrfmiddlewaretoken": csrf}).status_code == 201
    token = ApiToken.objects.get()
    assert client.post(f"/tokens/{token.pk}/revoke").status_code == 403
    token.refresh_from_db()
    assert token.revoked is None
    assert AuditEvent.objects.filter(action="http.post", outcome="denied").count() == 2


def test_bad_names_are_refused_and_audited(alice, bob):
    client = page_for(alice)
    make_token(client, name="ci")
    assert client.post("/tokens/", {"name": "ci"}).status_code == 409
    assert client.post("/tokens/", {"name": "  "}).status_code == 400
    assert client.post("/tokens/", {"name": "x" * 101}).status_code == 400
    assert client.post("/tokens/", {"name": "ok", "days": "0"}).status_code == 400
    assert ApiToken.objects.count() == 1
    failed = AuditEvent.objects.filter(action="token.add", outcome="failed")
    assert failed.count() == 4 and "already have a token named 'ci'" in failed.order_by("id").first().message


def test_the_page_needs_a_login():
    response = Client().get("/tokens/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert Client().post("/tokens/", {"name": "x"}).status_code == 302
    assert not ApiToken.objects.exists()


def test_drf_authtoken_keys_still_work_beside_named_tokens(alice):
    assert settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"][0] == "operations.authentication.ApiTokenAuthentication"
    assert ApiTokenAuthentication().authenticate_header(None) == "Token"
    old = Token.objects.create(user=alice).key
    new = make_token(page_for(alice))
    for key in (old, new):
        assert api_with(key).get("/api/tasks").status_code == 200, key
    refused(api_with("0" * 40).get("/api/tasks"), "Invalid token")
