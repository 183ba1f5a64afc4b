"""Benchmark: the VM page with a 500-snapshot tree, next to `virsh snapshot-list --tree`.

Run: .venv/bin/python bench/tree_render.py [--snapshots 500] [--runs 15]

Uses a throwaway SQLite database (/tmp/virtsnap-bench-tree-<pid>.sqlite3, migrated
here and deleted afterwards; the dev database is not touched) and the libvirt URI of
the settings (qemu:///system by default). Makes one tiny shut-off VM (vsbench-tree-*)
with a chain of snapshots that branches every 20 (made with hypervisor.create_snapshot,
so the app first finds them as made outside the app: the first page view records
them, and is reported apart). Then, alternating so both see the same machine load:
  app:  GET /vms/<vm>/ through django.test.Client (logged-in superuser), the whole
        page rendered: header, the 500-item tree, the forms; and, apart, two parts
        of it: getting the tree's data (trees.load_tree: libvirt and the DB) and
        making the tree's items (views.tree_rows and snapshots.render.items, from
        data already loaded, with the buttons a superuser sees);
  virsh: virsh -c <uri> snapshot-list --tree <vm>.
Prints both medians and their ratio, and what one page view costs in DB queries and
libvirt calls. Removes the VM, its disk and the database afterwards.
"""

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = f"/tmp/virtsnap-bench-tree-{os.getpid()}.sqlite3"
os.environ["DATABASE_URL"] = f"sqlite:///{DB}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ["ALLOWED_HOSTS"] = "testserver,localhost"


def make_tree(hypervisor, vm_uuid: str, count: int) -> None:
    """A chain that branches: every 20 snapshots, go back 7 and carry on from there."""
    for i in range(count):
        if i and i % 20 == 0:
            hypervisor.revert_snapshot(vm_uuid, f"s{i - 7:04d}")
        hypervisor.create_snapshot(vm_uuid, f"s{i:04d}", f"snapshot number {i}")
        if i and i % 100 == 0:
            print(f"  {i} snapshots", flush=True)


def remove(hypervisor, vm_uuid: str) -> None:
    """Delete every snapshot (any order: children move up, as in libvirt), then the VM."""
    if hypervisor.vm_exists(vm_uuid):
        names, _ = hypervisor.snapshot_names(vm_uuid)
        for snapshot in names:
            hypervisor.delete_snapshot(vm_uuid, snapshot)
        hypervisor.undefine_vm(vm_uuid)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--snapshots", type=int, default=500)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.template import Context
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from core import hypervisor, tiny
    from snapshots import render, views
    from snapshots import tree as trees

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", secrets.token_hex(8))
    client = Client()
    client.force_login(user)
    images = Path(settings.VM_IMAGE_DIR) / f"virtsnap-bench-{secrets.token_hex(4)}"
    name = f"vsbench-tree-{secrets.token_hex(3)}"
    vm = tiny.create_tiny_vm(name, image_dir=images)
    url = f"/vms/{name}/"
    virsh = ["virsh", "-c", settings.LIBVIRT_URI, "snapshot-list", "--tree", name]
    try:
        print(f"Making {args.snapshots} snapshots on {name} (shut off) ...", flush=True)
        made = timed(lambda: make_tree(hypervisor, vm.uuid, args.snapshots))
        print(f"  done in {made:.1f} s")

        def page():
            response = client.get(url)
            assert response.status_code == 200, response.status_code
            return response

        first = timed(page)
        html = page().content.decode()
        items = html.count('role="treeitem"')
        assert items == args.snapshots, f"the page shows {items} snapshots, not {args.snapshots}"
        with CaptureQueriesContext(connection) as queries, hypervisor.count_calls() as calls:
            page()
        query_count, call_count = len(queries), sum(calls.values())
        lines = subprocess.run(virsh, check=True, capture_output=True, text=True).stdout.count("\n")

        def tree():
            trees.load_tree(hypervisor.get_vm(name))

        loaded = trees.load_tree(hypervisor.get_vm(name))
        buttons = Context({"can_act": True, "can_revert": True, "can_edit": True, "can_delete": True})

        def tree_items():
            render.items(views.tree_rows(loaded), buttons)

        app, data, markup, raw = [], [], [], []
        for _ in range(args.runs):
            app.append(timed(page))
            data.append(timed(tree))
            markup.append(timed(tree_items))
            raw.append(timed(lambda: subprocess.run(virsh, check=True, capture_output=True)))
        app_median, data_median, raw_median = statistics.median(app), statistics.median(data), statistics.median(raw)
        markup_median = statistics.median(markup)

        print()
        print(f"VM page, {items} snapshots in the tree ({len(html) // 1024} KiB of HTML)")
        print(f"  first view (records {args.snapshots} snapshots found outside the app): {first * 1000:8.1f} ms")
        print(f"  app   GET {url:<28} median of {args.runs}: {app_median * 1000:8.1f} ms (the whole page, rendered)")
        print(f"    of which the VM and tree data (libvirt + DB):           {data_median * 1000:8.1f} ms")
        print(f"    of which the tree's items (rows + their HTML):          {markup_median * 1000:8.1f} ms")
        print(f"  virsh snapshot-list --tree ({lines} lines)  median of {args.runs}: {raw_median * 1000:8.1f} ms")
        print(f"  ratio app / virsh: {app_median / raw_median:.2f} (the page), {data_median / raw_median:.2f} (the tree's data)")
        print(f"  one page view: {query_count} DB queries, {call_count} libvirt calls ({', '.join(sorted(calls))})")
    finally:
        remove(hypervisor, vm.uuid)
        shutil.rmtree(images, ignore_errors=True)
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            Path(DB + suffix).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
