"""Benchmark: 20 API clients at once, reads and snapshot creates, against a real HTTP server.

Run: .venv/bin/python bench/concurrency.py [--seconds 60] [--clients 20] [--vms 10] [--post-share 0.1]

Uses a throwaway SQLite database (/tmp/virtsnap-bench-conc-<pid>.sqlite3, the default
set-up: SQLite + django-q2's ORM broker), a real web server (`manage.py runserver
127.0.0.1:<free port> --noreload`, DEBUG=False) and a real `qcluster` (Q_WORKERS=2),
both on that database. Makes --vms tiny shut-off VMs (vsbench-conc-<tag>-N) and one
more for raw libvirt (vsbench-conc-<tag>-raw), a superuser and its API token.

Each client is a thread with its own HTTP connections (http.client, one per request),
looping without pause over, at random:
  GET /api/vms
  GET /api/vms/<vm>/snapshots?all=true
  GET /api/tasks?limit=20
  POST /api/vms/<vm>/snapshots {"name": "c<client>-<n>"}   (a --post-share of the requests)
A 409 "another operation is ..." to a POST is the expected answer while that VM is busy,
counted apart. Meanwhile the bench itself, on its own libvirt connection, every half
second takes a snapshot of the raw VM with hypervisor.create_snapshot() and lists the
host's VMs with hypervisor.list_vms() (what GET /api/vms asks libvirt): raw libvirt under
the same load.

After --seconds it waits for every task to end, then prints the requests by kind, their
p50/p95/p99 latency and p95/p50, and checks (exit 1 with the reasons if one fails):
  no 5xx and no other unexpected answer or broken connection;
  p95/p50 <= 3, per kind and overall;
  the tasks accepted (202) are exactly the Operation rows (none lost, none doubled),
  all of them finished;
  each VM's snapshots in libvirt are exactly those of its finished snapshot.create
  tasks, and the app's records show the same.
Also prints which kinds make the overall tail, the requests of 1 s or more and the host's
listen-queue overflows meanwhile (runserver listens with a backlog of 10), and the
tracebacks and "database is locked" in the server's and the cluster's logs.
Removes the VMs, their disks, the database and the server logs afterwards.
"""

import argparse
import collections
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = f"/tmp/virtsnap-bench-conc-{os.getpid()}.sqlite3"
os.environ["DATABASE_URL"] = f"sqlite:///{DB}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# The server and the cluster inherit these.
os.environ["DEBUG"] = "False"
os.environ["ALLOWED_HOSTS"] = "127.0.0.1"
os.environ["Q_WORKERS"] = "2"

KINDS = ("GET /api/vms", "GET /api/vms/<vm>/snapshots?all=true", "GET /api/tasks?limit=20", "POST /api/vms/<vm>/snapshots")
VMS, SNAPSHOTS, TASKS, CREATE = KINDS
RATIO_TARGET = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 (inclusive method: for a few values, no extrapolation past the largest)."""
    if len(values) < 2:
        return (values[0],) * 3 if values else (float("nan"),) * 3
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


class Results:
    """Every request's (kind, status, seconds, start time) and the task ids accepted, from all clients."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[tuple[str, int, float, float]] = []
        self.accepted: list[int] = []
        self.unexpected: list[str] = []

    def add(self, kind: str, status: int, seconds: float, started: float, note: str = "") -> None:
        with self.lock:
            self.requests.append((kind, status, seconds, started))
            if note:
                self.unexpected.append(note)


def client_loop(number: int, port: int, token: str, vm_names: list[str], post_share: float, stop, results: Results):
    rng = random.Random(number)
    headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
    posts = 0
    while not stop.is_set():
        vm = rng.choice(vm_names)
        if rng.random() < post_share:
            posts += 1
            kind, method, path = CREATE, "POST", f"/api/vms/{vm}/snapshots"
            body = json.dumps({"name": f"c{number}-{posts}"})
            request_headers = {**headers, "Content-Type": "application/json"}
        else:
            kind = rng.choice((VMS, SNAPSHOTS, TASKS))
            method, body, request_headers = "GET", None, headers
            path = {VMS: "/api/vms", SNAPSHOTS: f"/api/vms/{vm}/snapshots?all=true", TASKS: "/api/tasks?limit=20"}[kind]
        started = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request(method, path, body=body, headers=request_headers)
                response = conn.getresponse()
                data = response.read()
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            results.add(kind, 0, time.perf_counter() - started, started, f"{method} {path}: {exc!r}")
            continue
        seconds = time.perf_counter() - started
        status, note = response.status, ""
        if kind == CREATE and status == 202:
            with results.lock:
                results.accepted.append(json.loads(data)["id"])
        elif kind == CREATE and status == 409 and b"another operation is" in data.lower():
            status = -409  # the VM is busy: expected, counted apart
        elif status != (202 if kind == CREATE else 200):
            note = f"{method} {path}: {status} {data[:300].decode(errors='replace')}"
        results.add(kind, status, seconds, started, note)


def raw_loop(hypervisor, vm_uuid: str, stop, raw: dict[str, list]) -> None:
    """Raw libvirt under the same load, on the bench's own connection, every half second:
    one snapshot of the extra VM, and the listing GET /api/vms makes (every VM on the host)."""
    i = 0
    while not stop.wait(0.5):
        i += 1
        t0 = time.perf_counter()
        hypervisor.create_snapshot(vm_uuid, f"raw-{i}")
        t1 = time.perf_counter()
        raw["vms"] = hypervisor.list_vms()
        raw["create"].append(t1 - t0)
        raw["list"].append(time.perf_counter() - t1)


def listen_overflows() -> int | None:
    """The host's count of connections dropped because a listening socket's backlog was full."""
    try:
        lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")]
        return int(dict(zip(lines[0], lines[1], strict=True))["ListenOverflows"])
    except (OSError, KeyError, IndexError, ValueError):
        return None


def log_findings(path: Path) -> str:
    """What a server or cluster log says went wrong: tracebacks, 'database is locked', errors."""
    text = path.read_text(errors="replace") if path.exists() else ""
    tracebacks = text.count("Traceback (most recent call last)")
    locked = text.count("database is locked")
    errors = collections.Counter(m.group(1)[:120] for m in re.finditer(r"^(\w+(?:\.\w+)*(?:Error|Exception): .*)$", text, re.M))
    found = f"{tracebacks} tracebacks, {locked} 'database is locked'"
    if errors:
        found += "; " + "; ".join(f"{n}x {e}" for e, n in errors.most_common(3))
    return found


def stop_process(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--vms", type=int, default=10)
    parser.add_argument("--post-share", type=float, default=0.1, help="share of the requests that are snapshot creates")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from core import hypervisor, tiny
    from core.errors import AppError
    from operations.models import Operation
    from snapshots import records

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", secrets.token_hex(8))
    token = Token.objects.create(user=user).key
    tag = secrets.token_hex(3)
    images = Path(settings.VM_IMAGE_DIR) / f"virtsnap-bench-conc-{tag}"
    logs = Path(tempfile.mkdtemp(prefix="virtsnap-bench-conc-"))
    port = free_port()
    vms, raw_vm, server, cluster, stop = [], None, None, None, threading.Event()
    failures: list[str] = []
    try:
        print(f"Making {args.vms} tiny shut-off VMs (vsbench-conc-{tag}-*) and one for raw libvirt ...", flush=True)
        vms = [tiny.create_tiny_vm(f"vsbench-conc-{tag}-{n}", image_dir=images) for n in range(1, args.vms + 1)]
        raw_vm = tiny.create_tiny_vm(f"vsbench-conc-{tag}-raw", image_dir=images)
        cluster_started = time.monotonic()
        cluster = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(logs / "qcluster.log").open("w"),
        )
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(logs / "server.log").open("w"),
        )
        deadline = time.monotonic() + 30
        while True:  # the server answers, and the cluster has had time to start its workers
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/vms", headers={"Authorization": f"Token {token}"})
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"the server did not start: {(logs / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(max(0.0, cluster_started + 3 - time.monotonic()))

        print(
            f"Load: {args.clients} clients for {args.seconds:g} s on {args.vms} VMs "
            f"({args.post_share:.0%} snapshot creates), runserver --noreload + qcluster (2 workers), SQLite ...",
            flush=True,
        )
        results, raw = Results(), {"create": [], "list": [], "vms": []}
        names = [vm.name for vm in vms]
        threads = [
            threading.Thread(target=client_loop, args=(n, port, token, names, args.post_share, stop, results), daemon=True)
            for n in range(1, args.clients + 1)
        ]
        threads.append(threading.Thread(target=raw_loop, args=(hypervisor, raw_vm.uuid, stop, raw), daemon=True))
        overflows = listen_overflows()
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        stop.wait(args.seconds)
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
        load_seconds = time.perf_counter() - began
        if overflows is not None:
            overflows = listen_overflows() - overflows

        # Every task ends (the cluster works through what was accepted).
        t0 = time.monotonic()
        while Operation.objects.active().exists() and time.monotonic() - t0 < 300:
            time.sleep(0.2)
        drained = time.monotonic() - t0
        still_active = Operation.objects.active().count()

        # The requests.
        by_kind = collections.defaultdict(list)
        for kind, _status, seconds, _ in results.requests:
            by_kind[kind].append(seconds)
        statuses = collections.Counter((kind, status) for kind, status, _, _ in results.requests)
        server_errors = sum(n for (_, status), n in statuses.items() if status >= 500)
        broken = sum(n for (_, status), n in statuses.items() if status == 0)
        total = len(results.requests)
        print()
        print(f"{total} requests in {load_seconds:.1f} s ({total / load_seconds:.0f}/s), latency in ms:")
        print(f"  {'':40} {'count':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'p95/p50':>8}")
        for kind in (*KINDS, "all"):
            values = [s for _, _, s, _ in results.requests] if kind == "all" else by_kind[kind]
            p50, p95, p99 = percentiles(values)
            ratio = p95 / p50 if values else float("nan")
            print(
                f"  {kind:40} {len(values):6} {p50 * 1000:8.1f} {p95 * 1000:8.1f} {p99 * 1000:8.1f} "
                f"{max(values, default=float('nan')) * 1000:8.1f} {ratio:8.2f}"
            )
            if values and not ratio <= RATIO_TARGET:
                failures.append(f"p95/p50 of {kind} is {ratio:.2f} (target <= {RATIO_TARGET:g})")
        overall_p95 = percentiles([s for _, _, s, _ in results.requests])[1]
        tail = collections.Counter(kind for kind, _, s, _ in results.requests if s > overall_p95)
        print(f"  slower than the overall p95: {', '.join(f'{n} {kind}' for kind, n in tail.most_common()) or 'none'}")
        slow = sum(1 for _, _, s, _ in results.requests if s >= 1)
        print(
            f"  {slow} requests took 1 s or more; the host's listen-queue overflows during the load: {overflows}"
            " (runserver's backlog is 10: a dropped connection is retried after 1 s)"
        )
        accepted, busy = statuses[CREATE, 202], statuses[CREATE, -409]
        print(f"  snapshot creates: {accepted} accepted (202), {busy} refused with 409 'another operation is ...' (VM busy)")
        others = {f"{k} -> {s}": n for (k, s), n in statuses.items() if s not in (0, 200, 202, -409)}
        print(f"server errors (5xx): {server_errors}; broken connections: {broken}; other unexpected answers: {others or 0}")
        for note in results.unexpected[:5]:
            print(f"  e.g. {note}")
        if server_errors or broken or others:
            failures.append(f"{server_errors} server errors, {broken} broken connections, other unexpected answers: {others}")

        # The tasks.
        ops = list(Operation.objects.all())
        ids, accepted_ids = collections.Counter(op.pk for op in ops), collections.Counter(results.accepted)
        lost = sorted(set(accepted_ids) - set(ids))
        unasked = sorted(set(ids) - set(accepted_ids))
        doubled = sorted(i for i, n in accepted_ids.items() if n > 1)
        finished = [op for op in ops if op.status == Operation.Status.FINISHED]
        failed = [op for op in ops if op.status == Operation.Status.FAILED]
        print(
            f"tasks: {len(results.accepted)} accepted (202), {len(ops)} Operation rows "
            f"({len(lost)} lost, {len(unasked)} not accepted, {len(doubled)} ids answered twice); "
            f"{len(finished)} finished, {len(failed)} failed, {still_active} still active "
            f"({drained:.1f} s after the load for the queue to drain)"
        )
        for op in failed[:5]:
            print(f"  failed: {op.summary}: {op.message}")
        if lost or unasked or doubled or len(ops) != len(results.accepted):
            failures.append(f"tasks accepted {len(results.accepted)} != Operation rows {len(ops)}")
        if failed or still_active:
            failures.append(f"{len(failed)} tasks failed, {still_active} still active")

        # The snapshots: libvirt, the finished tasks and the app's records agree, per VM.
        print("snapshots per VM: in libvirt / snapshot.create tasks finished / the app's records")
        for vm in vms:
            in_libvirt = set(hypervisor.snapshot_names(vm.uuid)[0])
            made = [op.params["libvirt_name"] for op in finished if op.vm_uuid == vm.uuid and op.kind == "snapshot.create"]
            recorded = set(records.live(vm.uuid))
            same = in_libvirt == set(made) == recorded and len(made) == len(set(made))
            print(f"  {vm.name:30} {len(in_libvirt):4} / {len(made):4} / {len(recorded):4}{'' if same else '   MISMATCH'}")
            if not same:
                failures.append(
                    f"{vm.name}: libvirt has {len(in_libvirt)} snapshots, {len(made)} tasks made them, "
                    f"the app records {len(recorded)} (missing in libvirt: {sorted(set(made) - in_libvirt)[:5]}, "
                    f"not from a task: {sorted(in_libvirt - set(made))[:5]})"
                )

        # For comparison: raw libvirt in the same run, and the tasks' own times.
        durations = [op.duration for op in finished if op.duration is not None]
        waits = [(op.finished_at - op.requested_at).total_seconds() for op in finished if op.finished_at]
        print("for comparison, snapshot of a shut-off tiny VM, medians under the same load:")
        if raw["create"]:
            label = f"raw libvirt hypervisor.create_snapshot (extra VM, {len(raw['create'])} runs)"
            print(f"  {label:62} {statistics.median(raw['create']) * 1000:8.1f} ms")
        if durations:
            label = f"task run (worker: started -> finished, {len(durations)} tasks)"
            print(f"  {label:62} {statistics.median(durations) * 1000:8.1f} ms")
            print(f"  {'task requested -> finished (queue + run)':62} {statistics.median(waits) * 1000:8.1f} ms")
        if raw["list"]:
            print(f"for comparison with GET /api/vms, the listing it makes ({len(raw['vms'])} VMs on the host), median:")
            label = f"raw libvirt hypervisor.list_vms() ({len(raw['list'])} runs)"
            print(f"  {label:62} {statistics.median(raw['list']) * 1000:8.1f} ms")
        print(f"server log: {log_findings(logs / 'server.log')}")
        print(f"qcluster log: {log_findings(logs / 'qcluster.log')}")
    finally:
        stop.set()  # the clients, if the load was cut short
        stop_process(server)
        stop_process(cluster)
        for vm in [*vms, raw_vm]:
            if vm is not None:
                try:
                    tiny.remove_vm(vm.uuid)
                except AppError as exc:
                    print(f"could not remove {vm.name}: {exc}")
        shutil.rmtree(images, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            Path(DB + suffix).unlink(missing_ok=True)

    print()
    if failures:
        print("CHECKS FAILED:")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print("checks hold: no server errors, p95/p50 <= 3, every accepted task ran once, snapshots match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
