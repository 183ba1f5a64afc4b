"""Fixtures: real tiny VMs on the real libvirtd, users with roles, API clients.

Every VM a test makes is named ``vstest-<random>`` and removed afterwards; tests
never touch a VM they did not create.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django_q.conf import Conf
from rest_framework.test import APIClient

from access.models import Grant, Role
from core import hypervisor, tiny
from core.tiny import remove_vm

IMAGE_ROOT = Path(os.environ.get("VIRTSNAP_TEST_IMAGES", "/var/lib/libvirt/images/virtsnap-tests"))
PASSWORD = "correct-horse-battery-9"


# Tests that kill the system libvirtd run only where that is allowed (CI sets it):
# on someone's real host, other VMs' management would go away under them.
MAY_RESTART_LIBVIRTD = os.environ.get("VIRTSNAP_TESTS_MAY_RESTART_LIBVIRTD") == "1"


def pytest_collection_modifyitems(config, items):
    if MAY_RESTART_LIBVIRTD:
        return
    skip = pytest.mark.skip(
        reason="kills and restarts the system libvirtd: set VIRTSNAP_TESTS_MAY_RESTART_LIBVIRTD=1 to run it (CI does)"
    )
    for item in items:
        if "restarts_libvirtd" in item.keywords:
            item.add_marker(skip)


def virsh(*args: str) -> subprocess.CompletedProcess:
    """virsh on the configured hypervisor (LIBVIRT_URI), checked."""
    return subprocess.run(["virsh", "-c", settings.LIBVIRT_URI, *args], check=True, capture_output=True, text=True)


def restart_libvirtd(signal: str = "TERM", while_down=None) -> None:
    """Stop libvirtd (SIGKILL stands in for a crash) and start it again; running VMs
    survive. ``while_down`` runs once it is gone, before it starts again."""
    assert MAY_RESTART_LIBVIRTD, "mark the test restarts_libvirtd"
    subprocess.run(["pkill", f"-{signal}", "-x", "libvirtd"], check=True)
    for _ in range(100):
        if subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode:
            break
        time.sleep(0.1)
    if while_down is not None:
        while_down()
    subprocess.run(["libvirtd", "-d"], check=True)
    for _ in range(100):
        if subprocess.run(["virsh", "-c", settings.LIBVIRT_URI, "version"], capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError("libvirtd did not come back")


@pytest.fixture
def image_dir(tmp_path_factory):
    path = IMAGE_ROOT / secrets.token_hex(4)
    path.mkdir(parents=True, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_vm(image_dir):
    """``make_vm(running=False, disk_format="qcow2", memory_mib=64, **kw)`` -> VMInfo."""
    made: list[str] = []

    def make(*, running: bool = False, disk_format: str = "qcow2", name: str | None = None, **kwargs):
        name = name or f"vstest-{secrets.token_hex(4)}"
        vm = tiny.create_tiny_vm(name, image_dir=image_dir, disk_format=disk_format, **kwargs)
        made.append(vm.uuid)
        if running:
            hypervisor.power(vm.uuid, "start")
        return hypervisor.get_vm(vm.uuid)

    yield make
    for uuid in made:
        remove_vm(uuid)


@pytest.fixture
def vm(make_vm):
    return make_vm()


@pytest.fixture
def running_vm(make_vm):
    return make_vm(running=True)


@pytest.fixture(scope="session")
def random_memory() -> Path:
    """512 MiB of random bytes that QEMU's loader device puts into guest RAM."""
    path = IMAGE_ROOT / "random-512M.bin"
    if not path.exists() or path.stat().st_size != 512 * 2**20:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for _ in range(64):
                f.write(os.urandom(8 * 2**20))
        tmp.rename(path)
    return path


@pytest.fixture
def big_vm(make_vm, random_memory):
    """A running 1 GiB VM whose memory is half random: a live snapshot takes seconds."""
    return make_vm(running=True, memory_mib=1024, loader_file=random_memory)


@pytest.fixture
def sync_tasks(monkeypatch):
    """Run queued operations in-process as soon as their transaction commits."""
    monkeypatch.setattr(Conf, "SYNC", True)


def _user(username, **extra):
    return get_user_model().objects.create_user(username=username, password=PASSWORD, email=f"{username}@example.com", **extra)


@pytest.fixture
def admin_user(db):
    return _user("root-admin", is_superuser=True, is_staff=True)


@pytest.fixture
def make_user(db):
    def make(username: str, role: str | None = None, vm=None, **extra):
        user = _user(username, **extra)
        if role:
            Grant.objects.create(
                role=Role.objects.get(name=role), user=user, vm_uuid=vm.uuid if vm else "", vm_name=vm.name if vm else ""
            )
        return user

    return make


@pytest.fixture
def api(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def wait_task(client, task_id: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = client.get(f"/api/tasks/{task_id}").json()
        if data["status"] != "running":
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still running after {timeout}s: {data}")
        time.sleep(0.1)


@pytest.fixture
def qcluster_env() -> dict:
    """Extra environment for the qcluster process (override in a test module)."""
    return {}


@pytest.fixture
def qcluster(transactional_db, qcluster_env):
    """A real django-q2 cluster process on the test database."""
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{connection.settings_dict['NAME']}", Q_WORKERS="1", **qcluster_env)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


# ---------------------------------------------------------------------------
# The database refuses to delete audit rows (operations migration 0003), and Django's
# flush between transactional tests deletes (SQLite) or truncates (PostgreSQL) every
# table: in the test database, the flush lifts those triggers for its own transaction.


@contextmanager
def audit_guard_lifted(conn=connection):
    """Within a transaction: the audit table's triggers off, then back as they were."""
    table = "operations_auditevent"
    with conn.cursor() as cursor:
        if conn.vendor == "sqlite":
            cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [table])
        else:
            cursor.execute(
                "SELECT tgname, '' FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND NOT tgisinternal AND tgenabled <> 'D'",
                [table],
            )
        triggers = cursor.fetchall()
        for name, _ in triggers:
            name = conn.ops.quote_name(name)
            cursor.execute(f"DROP TRIGGER {name}" if conn.vendor == "sqlite" else f"ALTER TABLE {table} DISABLE TRIGGER {name}")
    yield
    with conn.cursor() as cursor:
        for name, sql in triggers:
            cursor.execute(sql if conn.vendor == "sqlite" else f"ALTER TABLE {table} ENABLE TRIGGER {conn.ops.quote_name(name)}")


@pytest.fixture(scope="session", autouse=True)
def _flush_lifts_the_audit_guard():
    ops = type(connection.ops)
    flush = ops.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        with transaction.atomic(using=self.connection.alias), audit_guard_lifted(self.connection):
            flush(self, sql_list)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ops, "execute_sql_flush", execute_sql_flush)
        yield
