"""The API tokens page: a person makes, lists and revokes their own tokens
(access.models.ApiToken), each change and each refusal audited; the key is shown once,
in the answer to the POST that made it, and never again."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from access.models import ApiToken
from core.errors import AppError, Conflict, NotFound
from operations import audit
from operations.audit import Actor, attempt
from operations.models import AuditEvent

MAX_DAYS = 3650


class TokenForm(forms.Form):
    name = forms.CharField(max_length=ApiToken.NAME_MAX_LENGTH, help_text="What uses it, e.g. “backup script on host7”")
    days = forms.IntegerField(
        label="Expires after (days)",
        required=False,
        min_value=1,
        max_value=MAX_DAYS,
        help_text="Empty: never expires",
    )


# ---------------------------------------------------------------------------
# The changes: one function each, writing the audit row in the change's transaction


def create_token(user, name: str, days: int | None, *, actor: Actor) -> tuple[ApiToken, str]:
    """Make a token for ``user``; returns it and its key, which is kept nowhere (only its hash)."""
    params = {"name": name}
    with attempt("token.add", actor, params=params):
        if ApiToken.objects.filter(user=user, name=name, revoked__isnull=True).exists():
            raise Conflict(f"You already have a token named {name!r}: choose another name, or revoke that one.", field="name")
        key = ApiToken.new_key()
        now = timezone.now()
        token = ApiToken(
            user=user,
            name=name,
            key_hash=ApiToken.hash_key(key),
            prefix=key[: ApiToken.PREFIX_LENGTH],
            created=now,
            expires=now + timedelta(days=days) if days else None,
        )
        try:
            with transaction.atomic():
                token.save()
                audit.record(
                    "token.add",
                    actor=actor,
                    stage=AuditEvent.Stage.EVENT,
                    params=_params(token),
                    message=f"Made API token {token}{_expiry(token)}.",
                )
        except IntegrityError:
            # The same name taken at the same moment by another request.
            raise Conflict(f"You already have a token named {name!r}: choose another name.", field="name") from None
    return token, key


def revoke_token(user, token_id: int, *, actor: Actor) -> ApiToken:
    """Revoke one of ``user``'s own live tokens; another's, or one already revoked, is a 404."""
    with attempt("token.remove", actor, params={"id": token_id}):
        token = ApiToken.objects.filter(user=user, pk=token_id, revoked__isnull=True).first()
        if token is None:
            raise NotFound(f"You have no token #{token_id} (or it is already revoked).")
        now = timezone.now()
        with transaction.atomic():
            # Conditional: two revocations at once leave one audit row.
            if not ApiToken.objects.filter(pk=token.pk, revoked__isnull=True).update(revoked=now):
                raise NotFound(f"You have no token #{token_id} (or it is already revoked).")
            token.revoked = now
            audit.record(
                "token.remove",
                actor=actor,
                stage=AuditEvent.Stage.EVENT,
                params=_params(token),
                message=f"Revoked API token {token}.",
            )
    return token


def _params(token: ApiToken) -> dict:
    # Never the key: only what tells the token apart.
    return {
        "id": token.pk,
        "name": token.name,
        "prefix": token.prefix,
        "expires": token.expires.isoformat() if token.expires else None,
    }


def _expiry(token: ApiToken) -> str:
    return f", expiring {token.expires:%Y-%m-%d %H:%M %Z}" if token.expires else ", never expiring"


# ---------------------------------------------------------------------------
# The page


def _page(request, form: TokenForm, *, status: int = 200, new_key: str = "", new_token: ApiToken | None = None):
    now = timezone.now()
    tokens = ApiToken.objects.filter(user=request.user, revoked__isnull=True)
    context = {
        "form": form,
        "rows": [{"token": t, "expired": t.is_expired(now)} for t in tokens],
        "new_key": new_key,
        "new_token": new_token,
    }
    return render(request, "operations/tokens.html", context, status=status)


@never_cache  # the answer that shows a key must stay in no cache
@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def token_list(request):
    """GET: your tokens and the form; POST: make one and show its key, this once (201)."""
    if request.method != "POST":
        return _page(request, TokenForm())
    actor = Actor.from_request(request)
    form = TokenForm(request.POST)
    if not form.is_valid():
        reasons = " ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
        attempt("token.add", actor, params={"name": request.POST.get("name", "")[:100]}).refused(400, reasons)
        return _page(request, form, status=400)
    data = form.cleaned_data
    try:
        token, key = create_token(request.user, data["name"], data["days"], actor=actor)
    except AppError as exc:
        form.add_error(exc.field, exc.message)
        return _page(request, form, status=exc.status)
    # Rendered, not redirected: the key goes in no URL, no session and no cookie.
    return _page(request, TokenForm(), status=201, new_key=key, new_token=token)


@login_required
@require_POST
def token_revoke(request, token_id: int):
    token = revoke_token(request.user, token_id, actor=Actor.from_request(request))
    messages.success(request, f"Revoked token {token.name} ({token.prefix}…): it no longer works.")
    return redirect("token-list")
