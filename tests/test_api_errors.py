"""Bad input never makes the API answer 500, and every error is {"code", "reason"}
with the right status; the OpenAPI schema documents what the API does.

Found by fuzzing a live server (schemathesis and hand-written requests), on SQLite and
PostgreSQL; each test here is one of those findings. VMs are real tiny libvirt VMs;
mutations are only queued (no worker runs) unless a test says otherwise.
"""

import base64
import json

import pytest
import schemathesis
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import DataError, close_old_connections
from django.db.models import F
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.modes import GenerationMode

from core import hypervisor
from operations import audit
from operations.models import AuditEvent, Operation
from snapshots.models import SnapshotRecord
from tests.conftest import PASSWORD, api_for, wait_task

pytestmark = pytest.mark.django_db


def error(response, status: int) -> str:
    """The reason of an error answer, after checking its status and shape."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    data = response.json()
    assert set(data) == {"code", "reason"} and data["code"] == status, data
    assert data["reason"].strip()
    return data["reason"]


def raw(client, method: str, path: str, body: bytes | str = b"", content_type: str = "application/json", **extra):
    return client.generic(method, path, body, content_type=content_type, **extra)


def mutations(vm) -> list[tuple[str, str]]:
    """(method, path) of every API request that reads a body, on ``vm``, whose snapshot "s1" exists."""
    return [
        ("POST", f"/api/vms/{vm.name}/snapshots"),
        ("PUT", f"/api/vms/{vm.name}/snapshots/s1"),
        ("DELETE", f"/api/vms/{vm.name}/snapshots/s1"),
        ("POST", f"/api/vms/{vm.name}/snapshots/s1/revert"),
        ("POST", f"/api/vms/{vm.name}/start"),
        ("POST", f"/api/vms/{vm.name}/shutdown"),
        ("POST", f"/api/vms/{vm.name}/clone"),
        ("DELETE", f"/api/vms/{vm.name}"),
    ]


@pytest.fixture
def snap_vm(vm):
    hypervisor.create_snapshot(vm.uuid, "s1")
    return vm


# ---------------------------------------------------------------------------
# Bodies


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "null", "0", "false", "[]", '""'])
def test_a_body_that_is_not_an_object_is_400_everywhere(api, snap_vm, body):
    # Was: null accepted by every action but snapshot create ("No data provided" there),
    # and [] "" 0 false accepted by the actions that skipped parsing an empty-looking body.
    for method, path in mutations(snap_vm):
        reason = error(raw(api, method, path, body), 400)
        assert "JSON object" in reason, (method, path)
    assert Operation.objects.count() == 0
    assert hypervisor.snapshot_names(snap_vm.uuid)[0] == ["s1"]


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/x-www-form-urlencoded", "name=x"),
        ("multipart/form-data; boundary=b", '--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--b--\r\n'),
        ("text/plain", '{"name": "x"}'),
        ("", '{"name": "x"}'),
    ],
)
def test_a_body_that_is_not_json_is_415_saying_what_to_send(api, snap_vm, content_type, body):
    # Was: revert accepted any body unread (202).
    for method, path in mutations(snap_vm):
        reason = error(raw(api, method, path, body, content_type), 415)
        assert "application/json" in reason
    assert Operation.objects.count() == 0


def test_malformed_json_is_400_and_audited(api, vm):
    # Was: the only body refusal that left no audit row.
    reason = error(raw(api, "POST", f"/api/vms/{vm.name}/snapshots", "{not json"), 400)
    assert "not valid JSON" in reason and "application/json" in reason
    event = AuditEvent.objects.get(action="snapshot.create")
    assert event.outcome == "failed" and event.vm_name == vm.name


def test_deeply_nested_json_is_400(api, vm):
    # Was: 500 (RecursionError from the JSON decoder, which DRF lets through).
    body = "[" * 100_000 + "]" * 100_000
    assert "nested too deeply" in error(raw(api, "POST", f"/api/vms/{vm.name}/snapshots", body), 400)


def test_a_body_over_the_size_limit_is_413(api, vm, settings):
    # Was: Django's HTML "Bad Request (400)" page.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"description": "x" * 2000})
    assert "larger than 1000 bytes" in error(raw(api, "POST", f"/api/vms/{vm.name}/snapshots", body), 413)
    assert Operation.objects.count() == 0


def test_empty_bodies_are_empty_objects(api, snap_vm):
    assert api.put(f"/api/vms/{snap_vm.name}/snapshots/s1", b"", content_type="application/json").status_code == 200
    assert raw(api, "POST", f"/api/vms/{snap_vm.name}/snapshots/s1/revert", "", "").status_code == 202


def test_unknown_field_on_an_action_without_fields_says_so(api, snap_vm):
    # Was: "Unknown field(s): x. Allowed: ." (and revert ignored unknown fields).
    for path in (f"/api/vms/{snap_vm.name}/start", f"/api/vms/{snap_vm.name}/snapshots/s1/revert"):
        reason = error(api.post(path, {"x": 1}, format="json"), 400)
        assert "Unknown field(s): x" in reason and "takes none" in reason


@pytest.mark.parametrize("value", [1, True, None, {"a": 1}, ["a"], "x" * 101, " padded ", "a\x00b"])
def test_wrong_types_for_names_are_400(api, vm, value):
    for path in (f"/api/vms/{vm.name}/snapshots", f"/api/vms/{vm.name}/clone"):
        error(api.post(path, {"name": value}, format="json"), 400)
    assert Operation.objects.count() == 0


@pytest.mark.parametrize("value", ["soon", 1.5, True, None, {"s": 1}, 0])
def test_wrong_types_for_timeout_and_storage_are_400(api, running_vm, value):
    error(api.post(f"/api/vms/{running_vm.name}/shutdown", {"timeout": value}, format="json"), 400)
    if value not in (0, True):  # booleans to DRF
        error(api.delete(f"/api/vms/{running_vm.name}", {"storage": value}, format="json"), 400)
    assert Operation.objects.count() == 0


# ---------------------------------------------------------------------------
# Query parameters


def test_boolean_query_parameters_refuse_other_words(api, snap_vm):
    # Was: all=maybe silently meant false (storage=maybe was already 400).
    assert "true or false" in error(api.get(f"/api/vms/{snap_vm.name}/snapshots?all=maybe"), 400)
    assert "true or false" in error(api.delete(f"/api/vms/{snap_vm.name}?storage=maybe"), 400)
    assert [s["name"] for s in api.get(f"/api/vms/{snap_vm.name}/snapshots?all=TRUE").json()] == ["s1"]
    assert Operation.objects.count() == 0


def test_storage_and_mode_may_be_in_query_or_body_but_must_agree(api, snap_vm):
    assert "differ" in error(api.delete(f"/api/vms/{snap_vm.name}?storage=true", {"storage": False}, format="json"), 400)
    assert "differ" in error(api.delete(f"/api/vms/{snap_vm.name}/snapshots/s1?mode=node", {"mode": "all"}, format="json"), 400)
    # An empty query parameter is no parameter.
    both = api.delete(f"/api/vms/{snap_vm.name}/snapshots/s1?mode=", {"mode": "all"}, format="json")
    assert both.status_code == 202
    assert Operation.objects.get().params["mode"] == "all"


@pytest.mark.parametrize(
    "query, words",
    [
        ("limit=0", "greater than or equal to 1"),
        ("limit=-5", "greater than or equal to 1"),
        ("limit=1001", "less than or equal to 1000"),
        ("limit=abc", "integer"),
        ("limit=1e3", "integer"),
        ("status=bogus", "Unknown status"),
        ("vm=a%00b", "Null characters"),
        ("user=%00", "Null characters"),
    ],
)
def test_task_list_refuses_bad_parameters(api, query, words):
    # Was: limit=0 or -5 silently gave one task, 1001 silently 1000; vm=%00 was 500 on PostgreSQL.
    assert words in error(api.get(f"/api/tasks?{query}"), 400)


def test_task_list_empty_parameters_mean_not_given(api, vm):
    api.post(f"/api/vms/{vm.name}/start")
    assert len(api.get("/api/tasks?limit=&vm=&user=&status=").json()) == 1


@pytest.mark.parametrize(
    "query",
    ["to=9999-12-31", "to=9999-12-31T23:59:59-12:00", "from=0001-01-01T00:00%2B14:00", "before=x", "before=0", "limit=1.5"],
)
def test_audit_refuses_out_of_range_dates_and_bad_paging(api, query):
    # Was: 500 (OverflowError) for dates that do not fit the database's UTC range.
    error(api.get(f"/api/audit?{query}"), 400)


# ---------------------------------------------------------------------------
# Paths: unknown URLs, odd names


@pytest.mark.parametrize(
    "path",
    ["/api/nope", "/api", "/api/", "/api/vms/", "/api/tasks/abc", "/api/tasks/-1", "/api/vms/a%2Fb", "/api/vms/a/b/c/d"],
)
def test_unknown_api_urls_are_json_404(api, path):
    # Was: Django's HTML "Not Found" page.
    for method in ("get", "post", "delete"):
        assert "/api/docs/" in error(getattr(api, method)(path), 404)


def test_unknown_page_urls_stay_html(admin_client):
    response = admin_client.get("/no-such-page/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_a_nul_in_a_vm_name_is_404(api, vm):
    # Was: 500 (the libvirt binding raises ValueError for a NUL instead of asking libvirtd).
    for method, path in [
        ("get", "/api/vms/a%00b"),
        ("get", "/api/vms/%00/snapshots"),
        ("get", "/api/vms/%00/snapshots/current"),
        ("get", "/api/vms/%00/history"),
        ("post", "/api/vms/%00/start"),
        ("post", "/api/vms/%00/snapshots"),
        ("delete", "/api/vms/%00"),
    ]:
        assert "There is no VM named" in error(getattr(api, method)(path), 404), path
    assert error(api.get(f"/api/vms/{vm.name}/snapshots/a%00b"), 404)


def test_a_refusal_quoting_a_huge_or_nul_name_is_audited_within_the_columns(api, snap_vm):
    # Was: 500 on PostgreSQL (the audit row of the refusal did not fit its columns).
    long = "x" * 5000
    assert error(api.post(f"/api/vms/{snap_vm.name}/snapshots/{long}/revert"), 404)
    assert error(api.put(f"/api/vms/{snap_vm.name}/snapshots/a%00b", {"name": "z"}, format="json"), 404)
    rows = AuditEvent.objects.filter(action__in=["snapshot.revert", "snapshot.update"])
    assert sorted(r.snapshot for r in rows) == sorted(["a\ufffdb", "x" * 64])


def test_audit_record_keeps_what_the_database_can_store():
    event = audit.record(
        "x" * 50,
        actor=None,
        vm_name="v\x00" * 200,
        snapshot="s" * 100,
        params={"path": "/a\x00", "nested": ["\x00"], "n": 1},
        message="m\x00",
    )
    event.refresh_from_db()
    assert len(event.action) == 40 and len(event.vm_name) == 200 and "\x00" not in event.vm_name
    assert event.snapshot == "s" * 64 and event.message == "m\ufffd"
    assert event.params == {"path": "/a\ufffd", "nested": ["\ufffd"], "n": 1}


# ---------------------------------------------------------------------------
# Methods, negotiation, authentication


def test_wrong_method_is_405_naming_the_allowed_ones(api, vm):
    assert "use GET, HEAD" in error(api.patch("/api/vms"), 405)
    assert "use POST" in error(api.get(f"/api/vms/{vm.name}/start"), 405)
    assert error(raw(api, "FOO", "/api/tasks"), 405)


def test_head_and_options_answer(api, vm):
    assert api.head(f"/api/vms/{vm.name}").status_code == 200
    assert api.options(f"/api/vms/{vm.name}/snapshots").status_code == 200


def test_asking_for_something_else_than_json_is_406(api):
    # Was: ?format=xml answered 404 "Not found." as if the VM list did not exist.
    assert "format=xml" in error(api.get("/api/vms?format=xml"), 406)
    assert "application/json" in error(api.get("/api/vms", HTTP_ACCEPT="text/html"), 406)
    assert api.get("/api/vms?format=json").status_code == 200


def test_wrong_credentials_say_what_was_wrong(make_user):
    make_user("olga")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"olga:wrong").decode())
    assert "Invalid username/password" in error(client.get("/api/vms"), 401)
    client.credentials(HTTP_AUTHORIZATION="Token nope")
    assert "Invalid token" in error(client.get("/api/vms"), 401)
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"olga:{PASSWORD}".encode()).decode())
    assert client.get("/api/vms").status_code == 200
    assert "Log in first" in error(APIClient().get("/api/vms"), 401)


def test_a_value_the_database_refuses_is_400_not_500(api, monkeypatch):
    # PostgreSQL refuses NUL characters in text: what the checks before it let through.
    from vms import inventory as services

    def refuse(*args, **kwargs):
        raise DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")

    monkeypatch.setattr(services, "inventory", refuse)
    assert "NUL" in error(api.get("/api/vms"), 400)


def test_a_database_refusal_while_authenticating_is_401(make_user, monkeypatch):
    # Was: 500 on PostgreSQL for "Authorization: Token <NUL>" (and a NUL in a Basic username).
    from rest_framework.authentication import TokenAuthentication

    def refuse(self, key):
        raise DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")

    monkeypatch.setattr(TokenAuthentication, "authenticate_credentials", refuse)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token abc")
    response = client.post("/api/vms/x/start")
    assert "Invalid credentials" in error(response, 401)
    # The challenge is Token's, never Basic's (issue 11: a browser would prompt, then send it cross-site).
    assert response["WWW-Authenticate"] == "Token"
    assert AuditEvent.objects.get(action="vm.start").outcome == "denied"


def test_a_crash_under_api_is_json_500_with_the_request_id(admin_user, monkeypatch):
    # Was: Django's HTML "Server Error (500)" page.
    from vms import inventory as services

    monkeypatch.setattr(services, "inventory", lambda user: 1 / 0)
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    response = client.get("/api/vms", HTTP_X_REQUEST_ID="req-42")
    assert "req-42" in error(response, 500)


# ---------------------------------------------------------------------------
# The OpenAPI schema


def test_schema_builds_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))


@pytest.fixture
def schema(api):
    return api.get("/api/schema/?format=json").json()


def test_every_operation_documents_its_errors_in_the_error_shape(schema):
    assert schema["components"]["schemas"]["Error"]["required"] == ["code", "reason"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            codes = {int(code) for code in responses}
            where = f"{method.upper()} {path}"
            assert {401, 429} <= codes, where
            if "{vm}" in path or "{task_id}" in path:
                assert 404 in codes, where
            if method in ("post", "put", "delete"):
                assert {400, 403, 404, 409, 413, 415} <= codes, where
            for code in codes - {200, 202}:
                ref = responses[str(code)]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", where


def test_documented_answers_match_real_ones(api, snap_vm, schema):
    # Was: GET /api/vms documented as [{"vms": VM}], disks as one object, and {} (no
    # current snapshot) not allowed by the schema.
    components = schema["components"]["schemas"]
    vm_props = set(components["VM"]["properties"])
    listed = api.get("/api/vms").json()
    mine = next(v for v in listed if v["name"] == snap_vm.name)
    assert set(mine) == vm_props and isinstance(mine["disks"], list)
    assert set(mine["disks"][0]) == set(components["Disk"]["properties"])
    current = schema["paths"]["/api/vms/{vm}/snapshots/current"]["get"]["responses"]["200"]
    alternatives = current["content"]["application/json"]["schema"]["oneOf"]
    assert {"type": "object", "maxProperties": 0, "description": "no current snapshot"} in alternatives
    assert set(api.get(f"/api/vms/{snap_vm.name}/snapshots/current").json()) == set(components["SnapshotSchema"]["properties"])


def test_request_bodies_refuse_unknown_properties_and_document_names(schema):
    components = schema["components"]["schemas"]
    for name in ("SnapshotCreateInputRequest", "SnapshotUpdateInputRequest", "CloneInputRequest", "ShutdownInputRequest"):
        assert components[name]["additionalProperties"] is False, name
    update_name = components["SnapshotUpdateInputRequest"]["properties"]["name"]
    assert update_name["maxLength"] == 64 and update_name["pattern"].startswith("^")


def test_query_parameters_are_documented_with_their_types(schema):
    def params(path, method="get"):
        return {p["name"]: p["schema"] for p in schema["paths"][path][method].get("parameters", []) if p["in"] == "query"}

    assert params("/api/tasks")["limit"] == {"type": "integer", "maximum": 1000, "minimum": 1, "default": 100}
    assert params("/api/vms/{vm}/snapshots")["all"]["type"] == "boolean"
    assert params("/api/vms/{vm}", "delete")["storage"]["type"] == "boolean"
    assert params("/api/vms/{vm}/snapshots/{snapshot}", "delete")["mode"]["enum"] == ["node", "all", ""]
    assert params("/api/audit")["before"]["minimum"] == 1


@pytest.fixture
def wsgi_requests():
    """Requests through the WSGI app stay in the test's transaction (as the test client's do)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def test_generated_requests_get_documented_answers(wsgi_requests, make_user, snap_vm):
    """Requests generated from the schema (valid ones and invalid ones) on a real VM: no 500,
    and every answer's status, content type and body are the documented ones.

    Deterministic (derandomized); the user may act on this VM only, and nothing queued runs.
    """
    owner = make_user("fuzz", "owner", snap_vm)
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=12, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
            def run(case):
                # On the real VM and snapshot: odd names in paths have their own tests above.
                if "vm" in (case.path_parameters or {}):
                    case.path_parameters["vm"] = snap_vm.name
                if "snapshot" in (case.path_parameters or {}):
                    case.path_parameters["snapshot"] = "s1"
                case.call_and_validate(headers=headers, checks=checks)
                # Back to the start: the VM free of queued work, the snapshot named s1.
                Operation.objects.all().delete()
                SnapshotRecord.objects.update(name=F("libvirt_name"))

            try:
                run()
            except Unsatisfiable:
                # Nothing in this operation's schema can be made invalid (no parameters, no
                # body; the credentials are the test's own): there is no negative case.
                if mode is not GenerationMode.NEGATIVE:
                    raise


# ---------------------------------------------------------------------------
# Tasks still run: the stricter parsing changed nothing for good requests


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("sync_tasks")
def test_good_requests_still_work_end_to_end(make_user, vm):
    owner = make_user("oona", "owner", vm)
    client = api_for(owner)
    task = client.post(f"/api/vms/{vm.name}/snapshots", {"name": "one"}, format="json").json()
    assert wait_task(client, task["id"])["status"] == "finished"
    task = client.delete(f"/api/vms/{vm.name}/snapshots/one?mode=node").json()
    assert wait_task(client, task["id"])["status"] == "finished"
    assert hypervisor.snapshot_names(vm.uuid)[0] == []


def test_a_forwarded_for_that_is_no_address_is_not_recorded_as_one(api, settings, vm):
    # Was: 500 on PostgreSQL (its inet column refuses the text) when TRUST_X_FORWARDED_FOR is on.
    settings.TRUST_X_FORWARDED_FOR = True
    error(api.post(f"/api/vms/{vm.name}/start", [], format="json", HTTP_X_FORWARDED_FOR="10.0.0.1, <script>"), 400)
    assert AuditEvent.objects.get(action="vm.start").client_ip == "127.0.0.1"
    error(api.post(f"/api/vms/{vm.name}/start", [], format="json", HTTP_X_FORWARDED_FOR="2001:db8::1"), 400)
    assert AuditEvent.objects.filter(action="vm.start", client_ip="2001:db8::1").exists()


def test_the_forwarded_address_is_the_one_the_proxy_appended(api, settings, vm):
    # A client can send its own X-Forwarded-For; the proxy appends the address it saw.
    settings.TRUST_X_FORWARDED_FOR = True
    error(api.post(f"/api/vms/{vm.name}/start", [], format="json", HTTP_X_FORWARDED_FOR="6.6.6.6, 10.0.0.7"), 400)
    assert AuditEvent.objects.get(action="vm.start").client_ip == "10.0.0.7"
