"""Benchmark: POST a snapshot -> task finished, next to raw libvirt, in the same run.

Run: .venv/bin/python bench/snapshot_create.py [--runs N]

Uses a throwaway SQLite database (/tmp/virtsnap-bench.sqlite3, the default
set-up: SQLite + django-q2's ORM broker) and a real `qcluster` process; makes two
tiny shut-off VMs (vsbench-*) and removes them afterwards. For each run it times
  raw: hypervisor.create_snapshot() (one virDomainSnapshotCreateXML) on VM A, and
  app: POST /api/vms/B/snapshots, then polling GET /api/tasks/<id> until finished,
alternating the two so both see the same machine load. Prints medians and the overhead.
"""

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = "/tmp/virtsnap-bench.sqlite3"
os.environ["DATABASE_URL"] = f"sqlite:///{DB}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ["ALLOWED_HOSTS"] = "testserver,localhost"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    for suffix in ("", "-wal", "-shm"):
        Path(DB + suffix).unlink(missing_ok=True)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from core import hypervisor, tiny
    from core.tiny import remove_vm

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", secrets.token_hex(8))
    client = APIClient()
    client.force_authenticate(user)
    images = Path("/var/lib/libvirt/images/virtsnap-bench")
    tag = secrets.token_hex(3)
    raw_vm = tiny.create_tiny_vm(f"vsbench-raw-{tag}", image_dir=images)
    app_vm = tiny.create_tiny_vm(f"vsbench-app-{tag}", image_dir=images)
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(3)  # let the cluster start its workers
        raw, app = [], []
        for i in range(args.runs + 1):
            t0 = time.perf_counter()
            hypervisor.create_snapshot(raw_vm.uuid, f"raw-{i}")
            raw_time = time.perf_counter() - t0

            t0 = time.perf_counter()
            response = client.post(f"/api/vms/{app_vm.name}/snapshots", {"name": f"app-{i}"}, format="json")
            assert response.status_code == 202, response.json()
            task_id = response.json()["id"]
            while (task := client.get(f"/api/tasks/{task_id}").json())["status"] == "running":
                time.sleep(0.005)
            app_time = time.perf_counter() - t0
            assert task["status"] == "finished", task
            if i:  # the first run warms up the worker and connections
                raw.append(raw_time)
                app.append(app_time)
        raw_ms, app_ms = statistics.median(raw) * 1000, statistics.median(app) * 1000
        print(f"snapshot of a shut-off tiny VM, {args.runs} runs each, medians:")
        print(f"  raw libvirt snapshotCreateXML : {raw_ms:8.1f} ms")
        print(f"  app POST -> task finished     : {app_ms:8.1f} ms")
        print(f"  overhead                      : {app_ms - raw_ms:8.1f} ms  (ratio {app_ms / raw_ms:.2f}x; target < 300 ms)")
    finally:
        cluster.terminate()
        cluster.wait(timeout=20)
        remove_vm(raw_vm.uuid)
        remove_vm(app_vm.uuid)
        subprocess.run(["rm", "-rf", str(images)], check=False)


if __name__ == "__main__":
    main()
