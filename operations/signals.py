"""Audit rows for logins and logouts, and the periodic orphan check."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_migrate
from django.dispatch import receiver

from operations import audit
from operations.audit import Actor
from operations.models import AuditEvent


@receiver(user_logged_in)
def on_login(sender, request, user, **kwargs):
    audit.record(
        "login",
        actor=Actor(user=user, ip=audit.client_ip(request), request_id=getattr(request, "request_id", "")),
        stage=AuditEvent.Stage.EVENT,
        message="Logged in",
    )


@receiver(user_logged_out)
def on_logout(sender, request, user, **kwargs):
    if user is not None:
        audit.record(
            "logout",
            actor=Actor(user=user, ip=audit.client_ip(request), request_id=getattr(request, "request_id", "")),
            stage=AuditEvent.Stage.EVENT,
            message="Logged out",
        )


@receiver(user_login_failed)
def on_login_failed(sender, credentials, request=None, **kwargs):
    username = str(credentials.get("username", ""))[:150]
    audit.record(
        "login",
        actor=Actor(user=None, ip=audit.client_ip(request) if request else None, request_id=getattr(request, "request_id", "")),
        username=username,
        stage=AuditEvent.Stage.EVENT,
        outcome=AuditEvent.Outcome.FAILED,
        message="Wrong username or password",
    )


@receiver(post_migrate)
def schedule_orphan_check(sender, **kwargs):
    if sender.name != "operations":
        return
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name="settle orphaned operations",
        defaults={"func": "operations.runner.settle_orphans", "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )
