"""A VM you may not see answers exactly like one that does not exist: same status, same
body, naming only what you sent — by name or by UUID, on every kind of request."""

import re
import uuid

import pytest

from tests.conftest import api_for

pytestmark = pytest.mark.django_db


def answer(client, method: str, path: str):
    response = getattr(client, method)(path, {}, format="json") if method != "get" else client.get(path)
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/vms/{vm}"),
        ("get", "/api/vms/{vm}/snapshots"),
        ("post", "/api/vms/{vm}/snapshots"),
        ("post", "/api/vms/{vm}/start"),
        ("delete", "/api/vms/{vm}"),
    ],
)
def test_a_hidden_vm_asked_by_uuid_looks_like_an_unknown_uuid(make_user, vm, method, path):
    client = api_for(make_user("outsider"))
    unknown = str(uuid.uuid4())
    hidden = answer(client, method, path.format(vm=vm.uuid))
    missing = answer(client, method, path.format(vm=unknown))
    assert hidden[0] == missing[0] == 404
    assert vm.name not in str(hidden[1])
    assert hidden[1] == {k: v.replace(unknown, vm.uuid) if isinstance(v, str) else v for k, v in missing[1].items()}


def test_the_vm_page_by_uuid_says_no_more_than_for_an_unknown_uuid(client, make_user, vm):
    client.force_login(make_user("outsider"))
    unknown = str(uuid.uuid4())
    hidden = client.get(f"/vms/{vm.uuid}/")
    missing = client.get(f"/vms/{unknown}/")
    assert hidden.status_code == missing.status_code == 404
    assert vm.name not in hidden.content.decode()
    assert text(hidden, vm.uuid) == text(missing, unknown)


def text(response, sent: str) -> str:
    """The page with what was sent and the (per-response) CSRF token blanked out."""
    page = response.content.decode().replace(sent, "X")
    return re.sub(r'("X-CSRFToken": "|name="csrfmiddlewaretoken" value=")[^"]+', "", page)
