"""The VM API: ``/api/vms``, ``/api/vms/<vm>`` (GET, DELETE), its power actions and clone."""

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.errors import error_responses
from core.api.inputs import NameField, QueryFlag, StrictSerializer, parse_body, parse_query
from core.errors import Invalid
from core.names import VM_NAME
from operations.api import TASK, task_response
from operations.audit import Actor
from vms import clone, inventory, power, removal


@extend_schema_serializer(component_name="Disk")
class DiskSchema(serializers.Serializer):
    target = serializers.CharField(help_text="vda, sda, ...")
    device = serializers.CharField(help_text="disk, cdrom, ...")
    format = serializers.CharField(help_text="qcow2, raw, ...")
    source = serializers.CharField(help_text="the file (or volume) behind it")
    readonly = serializers.BooleanField()


@extend_schema_serializer(component_name="VM")
class VMSchema(serializers.Serializer):
    """The VM object (documentation of the answer)."""

    name = serializers.CharField()
    uuid = serializers.UUIDField()
    state = serializers.CharField(help_text="running, shutoff, paused, crashed, ... (libvirt's words)")
    vcpus = serializers.IntegerField()
    memory = serializers.IntegerField(help_text="MiB")
    disks = DiskSchema(many=True)
    snapshots = serializers.IntegerField(help_text="number of snapshots")

    def get_fields(self):
        fields = super().get_fields()
        # Not a Python name, hence added here.
        fields["current-snapshot"] = serializers.CharField(help_text='name of the current snapshot, or ""')
        return fields


class VMList(APIView):
    @extend_schema(responses={200: VMSchema(many=True), **error_responses(503)}, description="The VMs you may see.")
    def get(self, request):
        return Response([inventory.vm_dict(vm, current) for vm, current in inventory.inventory(request.user)])


# ---------------------------------------------------------------------------
# Lifecycle: power actions, delete, clone (each answers 202 with a Task)


class ShutdownInput(StrictSerializer):
    timeout = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="seconds to wait for the guest OS (default: SHUTDOWN_TIMEOUT, 60; at most TASK_TIMEOUT - 60)",
    )


class CloneInput(StrictSerializer):
    name = NameField(rule=VM_NAME, required=False, allow_blank=True, help_text=f"{VM_NAME.text}; default <vm>-clone")


STORAGE = "true: also remove disk files no other VM uses"


class DeleteInput(StrictSerializer):
    storage = serializers.BooleanField(required=False, help_text=STORAGE, error_messages={"invalid": "Must be true or false."})


class DeleteQuery(serializers.Serializer):
    storage = QueryFlag(required=False, help_text=STORAGE)


class VMPower(APIView):
    """``POST /api/vms/<vm>/<action>``: one URL and one subclass per action (see ``power_view``)."""

    power_action = ""

    @property
    def audit_actions(self) -> dict:
        return {"POST": f"vm.{self.power_action}"}

    def post(self, request, vm: str):
        body = parse_body(ShutdownInput if self.power_action == "shutdown" else StrictSerializer, request)
        op = power.request_power(Actor.from_request(request), vm, self.power_action, timeout=body.get("timeout"))
        return task_response(op)


def power_view(action: str):
    class View(VMPower):
        power_action = action

        @extend_schema(
            operation_id=f"vm_{action}",
            request=ShutdownInput if action == "shutdown" else None,
            responses={202: TASK, **error_responses(403, 404, 409, 503, body=True)},
            description=power.POWER_ACTIONS[action].help,
        )
        def post(self, request, vm: str):
            return super().post(request, vm)

    View.__name__ = View.__qualname__ = f"VM{action.capitalize()}"
    return View.as_view()


class VMClone(APIView):
    audit_actions = {"POST": "vm.clone"}

    @extend_schema(
        request=CloneInput,
        responses={202: TASK, **error_responses(403, 404, 409, 503, body=True)},
        description="Clone a shut-off VM with its snapshots; the Task's target_uri is the clone.",
    )
    def post(self, request, vm: str):
        body = parse_body(CloneInput, request)
        return task_response(clone.request_clone(Actor.from_request(request), vm, body.get("name") or None))


class VMDetail(APIView):
    audit_actions = {"DELETE": "vm.delete"}

    @extend_schema(responses={200: VMSchema, **error_responses(404, 503)})
    def get(self, request, vm: str):
        info, current = inventory.vm_detail(request.user, vm)
        return Response(inventory.vm_dict(info, current))

    @extend_schema(
        request=DeleteInput,
        responses={202: TASK, **error_responses(403, 404, 409, 503, body=True)},
        parameters=[DeleteQuery],
        description="Stop the VM if it runs, delete its snapshots (leaves first), undefine it (NVRAM too). "
        "`storage` in the query or the body (not both, unless they agree).",
    )
    def delete(self, request, vm: str):
        body = parse_body(DeleteInput, request)
        query = parse_query(DeleteQuery, request)
        if "storage" in query and "storage" in body and body["storage"] != query["storage"]:
            raise Invalid("storage in the query and in the body differ: send one.")
        storage = body.get("storage", query.get("storage", False))
        return task_response(removal.request_delete(Actor.from_request(request), vm, storage=storage))
