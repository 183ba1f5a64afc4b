"""The Task and AuditEvent objects as the API shows them."""

from rest_framework import serializers

from operations.models import AuditEvent, Operation


class TaskSerializer(serializers.ModelSerializer):
    status = serializers.CharField(source="public_status", help_text="running until the work ends, then finished or failed")
    vm = serializers.CharField(source="vm_name")
    user = serializers.CharField(source="username")
    progress = serializers.IntegerField(allow_null=True, help_text="0-100 where it can be known")

    class Meta:
        model = Operation
        fields = [
            "id",
            "status",
            "message",
            "target_uri",
            "progress",
            "kind",
            "vm",
            "vm_uuid",
            "snapshot",
            "user",
            "requested_at",
            "started_at",
            "finished_at",
        ]


class AuditEventSerializer(serializers.ModelSerializer):
    task = serializers.IntegerField(source="operation_id", allow_null=True)
    user = serializers.CharField(source="username")
    repeats = serializers.IntegerField(
        read_only=True, help_text="identical anonymous refusals this row stands for (1, or more within a minute)"
    )
    hash = serializers.CharField(
        read_only=True, help_text="SHA-256 of the previous event's hash and this event (manage.py audit verify)"
    )

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "time",
            "user",
            "client_ip",
            "action",
            "stage",
            "vm_name",
            "vm_uuid",
            "snapshot",
            "params",
            "outcome",
            "message",
            "task",
            "request_id",
            "repeats",
            "hash",
        ]
