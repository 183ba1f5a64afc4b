"""The VM page and its snapshot actions: thin views over ``snapshots.services``.

Every action works without JavaScript (POST, redirect, GET with a flash message);
with htmx the same URLs answer with the fragment to swap in place: the whole VM
page (``#vm-page``) after an action that starts a task, one tree item after an
edit, the confirmation inside the page's ``<dialog>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget

from access import policy
from core import hypervisor
from core.errors import AppError, in_place
from operations import runner
from operations.audit import Actor
from operations.models import Operation
from snapshots import history, services
from snapshots.forms import SnapshotCreateForm, SnapshotEditForm
from snapshots.models import SnapshotRecord
from snapshots.tree import Tree, default_name, get_snapshot, load_tree

# How many levels get their own indentation (desktop, phone: the same numbers are in
# virtsnap.css as --cap); items at the cap and deeper say "level N" instead, so a
# chain hundreds deep never scrolls sideways.
INDENT_LEVELS = 8
INDENT_LEVELS_PHONE = 4


@dataclass(slots=True)
class Row:
    """One snapshot in display order, with what the ARIA tree needs.

    Only the tree's shape: ``snapshots.render`` turns it into markup.
    """

    record: SnapshotRecord
    level: int  # 1 for a root
    posinset: int
    setsize: int
    url: str = ""  # the snapshot's URL; its actions are below it
    descendants: int = 0
    current: bool = False
    on_path: bool = False  # an ancestor of the current snapshot

    @property
    def dom_id(self) -> str:
        return f"snap-{self.record.pk}"

    @property
    def depth_label(self) -> str:
        """Where the item's level is shown: "all" screens, "phone" only, or "" (none)."""
        if self.level > INDENT_LEVELS:
            return "all"
        return "phone" if self.level > INDENT_LEVELS_PHONE else ""


def tree_rows(tree: Tree) -> list[Row]:
    """The tree depth first, oldest sibling first, as a flat list.

    Flat on purpose: a chain hundreds deep must hit neither Python's recursion
    limit (recursive includes) nor the browser's DOM depth limit (nested lists).
    The hierarchy is carried by aria-level / aria-posinset / aria-setsize.
    """
    current = tree.current.pk if tree.current else None
    on_path: set[int] = set()
    node = tree.current
    while node is not None and node.pk not in on_path:
        on_path.add(node.pk)
        node = tree.by_id.get(node.parent_id)
    base = reverse("snapshot-create", args=[tree.vm.name])
    rows: list[Row] = []
    stack = [(r, 1, i + 1, len(tree.roots)) for i, r in reversed(list(enumerate(tree.roots)))]
    while stack:
        record, level, pos, size = stack.pop()
        url = f"{base}{quote(record.name, safe='')}/"
        rows.append(Row(record, level, pos, size, url, current=record.pk == current, on_path=record.pk in on_path))
        kids = record.kids
        stack.extend((k, level + 1, i + 1, len(kids)) for i, k in reversed(list(enumerate(kids))))
    counts: dict[int, int] = {}
    for row in reversed(rows):  # children come after their parent: count bottom-up
        row.descendants = counts[row.record.pk] = sum(1 + counts.get(k.pk, 0) for k in row.record.kids)
    return rows


def subtree(rows: list[Row], record: SnapshotRecord) -> list[Row]:
    """The rows below ``record``, in display order."""
    for i, row in enumerate(rows):
        if row.record.pk == record.pk:
            return rows[i + 1 : i + 1 + row.descendants]
    return []


def _perm_flags(perms: set[str]) -> dict:
    """What the tree's buttons need to know, decided once for all items."""
    flags = {f"can_{p}": f"snapshot_{p}" in perms for p in ("revert", "edit", "delete")}
    return {"perms": perms, **flags, "can_act": any(flags.values())}


def busy_reason(active: Operation | None) -> str:
    """Why the snapshot actions are disabled right now ("" when they are not)."""
    if active is None:
        return ""
    state = "waiting for a worker" if active.status == Operation.Status.QUEUED else "running"
    return f"{active.summary.capitalize()} is {state}: wait for it to end."


def _placement(op: Operation | None, tree: Tree) -> tuple[str, int | None]:
    """Where an operation's progress shows: where it was started."""
    if op is None:
        return "", None
    if op.kind == "snapshot.create":
        return "create", None
    pks = []
    if op.kind == "snapshot.revert":
        pks = [op.params.get("record")]
    elif op.kind == "snapshot.delete":
        pks = [t.get("record") for t in op.params.get("targets", [])[-1:]]
    for pk in pks:
        if pk in tree.by_id:
            return "row", pk
    return "general", None


def page_context(request: HttpRequest, vm: hypervisor.VMInfo, *, task: int | None = None, create_form=None) -> dict:
    """Everything the VM page shows, in a fixed number of queries and libvirt calls."""
    tree = load_tree(vm)
    perms = policy.access_for(request.user).perms(vm.uuid)
    active = runner.active_operation(vm.uuid)
    shown = active
    if shown is None and task:
        # A task that just ended: its outcome stays where it was started.
        shown = Operation.objects.filter(pk=task, vm_uuid=vm.uuid).first()
    place, place_pk = _placement(shown, tree)
    if place == "create" and "snapshot_create" not in perms:
        place = "general"  # no form on this user's page: show it at the top
    return {
        "vm": vm,
        "tree": tree,
        "rows": tree_rows(tree),
        "current": tree.current,
        **_perm_flags(perms),
        "active": active,
        "shown": shown,
        "place": place,
        "place_pk": place_pk,
        "busy_reason": busy_reason(active),
        "blockers": services.snapshot_blockers(vm),
        "form": create_form or SnapshotCreateForm(),
        "default_name": default_name(tree.taken),
    }


def render_page(request: HttpRequest, context: dict, status: int = 200) -> HttpResponse:
    """The VM page, or only its ``#vm-page`` part for htmx."""
    template = "vms/_page.html" if request.htmx else "vms/detail.html"
    return render(request, template, context, status=status)


def _task_param(request: HttpRequest) -> int | None:
    value = request.GET.get("task", "")
    return int(value) if value.isdigit() else None


def vm_page(request: HttpRequest, name: str) -> HttpResponse:
    vm = policy.get_vm(request.user, name, snapshots=False)  # the tree reads the current snapshot
    return render_page(request, page_context(request, vm, task=_task_param(request)))


def _vm_url(vm_name: str, *, task: int | None = None, anchor: str = "") -> str:
    url = reverse("vm-detail", args=[vm_name])
    if task:
        url += f"?task={task}"
    return url + (f"#{anchor}" if anchor else "")


def _started(request: HttpRequest, vm_name: str, op: Operation, what: str) -> HttpResponse:
    """An operation was queued: show the page with its progress where it was started."""
    messages.success(request, f"{what}: task #{op.pk} started.")
    if request.htmx:
        vm = policy.get_vm(request.user, vm_name, snapshots=False)
        # Focus moves to the progress, where a screen reader follows the task.
        return render_page(request, {**page_context(request, vm, task=op.pk), "focus_task": True})
    return redirect(_vm_url(vm_name, task=op.pk))


# ---------------------------------------------------------------------------
# Take a snapshot


@login_required
@require_POST
def snapshot_create(request: HttpRequest, vm: str) -> HttpResponse:
    form = SnapshotCreateForm(request.POST)
    form.is_valid()  # nothing to refuse here: the service checks (and audits)
    data = form.cleaned_data
    try:
        op = services.request_create(Actor.from_request(request), vm, data.get("name") or None, data.get("description", ""))
    except AppError as exc:
        form.show_error(in_place(exc))
        return render_page(
            request, page_context(request, policy.get_vm(request.user, vm, snapshots=False), create_form=form), exc.status
        )
    return _started(request, vm, op, f"Taking snapshot {op.snapshot}")


# ---------------------------------------------------------------------------
# One snapshot: its tree item, edit in place


def _row_context(request: HttpRequest, tree: Tree, record: SnapshotRecord, **extra) -> dict:
    rows = tree_rows(tree)
    row = next(r for r in rows if r.record.pk == record.pk)
    active = runner.active_operation(tree.vm.uuid)
    return {
        "vm": tree.vm,
        "tree": tree,
        "row": row,
        **_perm_flags(policy.access_for(request.user).perms(tree.vm.uuid)),
        "active": active,
        "busy_reason": busy_reason(active),
        "blockers": services.snapshot_blockers(tree.vm),
        **extra,
    }


@login_required
def snapshot_row(request: HttpRequest, vm: str, snapshot: str) -> HttpResponse:
    """One tree item (htmx: cancel an edit); without JS, the snapshot on the VM page."""
    tree, record = get_snapshot(request.user, vm, snapshot)
    if not request.htmx:
        return redirect(_vm_url(vm, anchor=f"snap-{record.pk}"))
    return render(request, "snapshots/_row_response.html", _row_context(request, tree, record, focus_edit=True))


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_edit(request: HttpRequest, vm: str, snapshot: str) -> HttpResponse:
    """Rename a snapshot and edit its description, in place in the tree."""
    if request.method == "POST":
        form = SnapshotEditForm(request.POST)
        form.is_valid()
        data = form.cleaned_data
        try:
            tree, record = services.request_update(
                Actor.from_request(request), vm, snapshot, name=data.get("name", ""), description=data.get("description", "")
            )
        except AppError as exc:
            form.show_error(in_place(exc))
            status = exc.status
        else:
            messages.success(request, f"Snapshot {snapshot} saved" + (f" as {record.name}." if record.name != snapshot else "."))
            if request.htmx:
                return render(request, "snapshots/_row_response.html", _row_context(request, tree, record, focus_edit=True))
            return redirect(_vm_url(vm, anchor=f"snap-{record.pk}"))
        tree, record = get_snapshot(request.user, vm, snapshot)
    else:
        tree, record = get_snapshot(request.user, vm, snapshot, "snapshot_edit")
        form = SnapshotEditForm(initial={"name": record.name, "description": record.description})
        status = 200
    context = _row_context(request, tree, record, form=form, editing=True)
    template = "snapshots/_row_response.html" if request.htmx else "snapshots/edit.html"
    return render(request, template, context, status=status)


# ---------------------------------------------------------------------------
# Revert and delete: confirm first (a page without JS, the page's dialog with it)


def render_confirmation(request: HttpRequest, *, dialog: str, page: str, context: dict, status: int = 200) -> HttpResponse:
    """A confirmation: its form in the page's dialog for htmx, else a page of its own."""
    if request.htmx:
        response = render(request, dialog, context, status=status)
        if request.method == "POST":
            # The form targets the page; a refusal stays in the dialog instead.
            reswap(retarget(response, "#dialog-body"), "innerHTML")
        return response
    return render(request, page, context, status=status)


def _confirm(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    return render_confirmation(
        request, dialog=f"snapshots/_{template}_confirm.html", page=f"snapshots/{template}.html", context=context, status=status
    )


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_revert(request: HttpRequest, vm: str, snapshot: str) -> HttpResponse:
    error, status = "", 200
    if request.method == "POST":
        try:
            op = services.request_revert(Actor.from_request(request), vm, snapshot)
        except AppError as exc:
            error, status = in_place(exc).message, exc.status
        else:
            return _started(request, vm, op, f"Reverting {vm} to snapshot {op.snapshot}")
    tree, record = get_snapshot(request.user, vm, snapshot, "snapshot_revert")
    context = {"vm": tree.vm, "record": record, "tree": tree, "error": error, "is_current": tree.current == record}
    return _confirm(request, "revert", context, status)


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_delete(request: HttpRequest, vm: str, snapshot: str) -> HttpResponse:
    error, status = "", 200
    if request.method == "POST":
        mode = request.POST.get("mode", "node")
        try:
            op = services.request_delete(Actor.from_request(request), vm, snapshot, mode)
        except AppError as exc:
            error, status = in_place(exc).message, exc.status
        else:
            what = f"Deleting snapshot {op.snapshot}"
            if mode == "all" and len(op.params["targets"]) > 1:
                what += f" and its {len(op.params['targets']) - 1} descendants"
            return _started(request, vm, op, what)
    tree, record = get_snapshot(request.user, vm, snapshot, "snapshot_delete")
    below = subtree(tree_rows(tree), record)
    parent = tree.by_id.get(record.parent_id)
    context = {
        "vm": tree.vm,
        "record": record,
        "tree": tree,
        "below": below,
        "below_indent": [(row, row.level - below[0].level) for row in below],
        "children": record.kids,
        "parent": parent,
        "error": error,
    }
    return _confirm(request, "delete", context, status)


# ---------------------------------------------------------------------------
# History


@login_required
@require_GET
def vm_history(request: HttpRequest, name: str) -> HttpResponse:
    return render(request, "vms/history.html", {"history": history.vm_history(request.user, name)})
