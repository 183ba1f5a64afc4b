from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from operations.audit import Actor
from operations.serializers import StrictSerializer, TaskSerializer
from snapshots.api import parse, task_response
from vms import lifecycle, services
from vms.errors import Invalid

DiskSchema = inline_serializer(
    "Disk",
    {
        "target": serializers.CharField(),
        "device": serializers.CharField(),
        "format": serializers.CharField(),
        "source": serializers.CharField(),
        "readonly": serializers.BooleanField(),
    },
)
VMSchema = inline_serializer(
    "VM",
    {
        "name": serializers.CharField(),
        "uuid": serializers.UUIDField(),
        "state": serializers.CharField(help_text="running, shutoff, paused, crashed, ... (libvirt's words)"),
        "vcpus": serializers.IntegerField(),
        "memory": serializers.IntegerField(help_text="MiB"),
        "disks": DiskSchema,
        "snapshots": serializers.IntegerField(help_text="number of snapshots"),
        "current-snapshot": serializers.CharField(help_text='name of the current snapshot, or ""'),
    },
)


class VMList(APIView):
    @extend_schema(responses=inline_serializer("VMList", {"vms": VMSchema}, many=True))
    def get(self, request):
        return Response([services.vm_dict(vm, current) for vm, current in services.inventory(request.user)])


# ---------------------------------------------------------------------------
# Lifecycle: power actions, delete, clone (each answers 202 with a Task)


class ShutdownInput(StrictSerializer):
    timeout = serializers.IntegerField(
        required=False, min_value=1, help_text="seconds to wait for the guest OS (default: SHUTDOWN_TIMEOUT, 60)"
    )


class CloneInput(StrictSerializer):
    name = serializers.CharField(
        required=False, allow_blank=True, max_length=200, help_text=f"{lifecycle.VM_NAME_RULE}; default <vm>-clone"
    )


class DeleteInput(StrictSerializer):
    storage = serializers.BooleanField(required=False, help_text="also remove disk files no other VM uses")


def _flag(value: str, name: str) -> bool:
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("", "0", "false", "no", "off"):
        return False
    raise Invalid(f"{name} must be true or false, not {value!r}.")


class VMPower(APIView):
    """``POST /api/vms/<vm>/<action>``: one URL and one subclass per action (see ``power_view``)."""

    power_action = ""

    @property
    def audit_actions(self) -> dict:
        return {"POST": f"vm.{self.power_action}"}

    def post(self, request, vm: str):
        body = parse(ShutdownInput if self.power_action == "shutdown" else StrictSerializer, request) if request.data else {}
        op = lifecycle.request_power(Actor.from_request(request), vm, self.power_action, timeout=body.get("timeout"))
        return task_response(op)


def power_view(action: str):
    class View(VMPower):
        power_action = action

        @extend_schema(
            operation_id=f"vm_{action}",
            request=ShutdownInput if action == "shutdown" else None,
            responses={202: TaskSerializer},
            description=POWER_HELP[action],
        )
        def post(self, request, vm: str):
            return super().post(request, vm)

    View.__name__ = View.__qualname__ = f"VM{action.capitalize()}"
    return View.as_view()


POWER_HELP = {
    "start": "Start a shut-off VM. 409 if it is not shut off.",
    "shutdown": "Ask the guest OS to shut down (ACPI) and wait up to `timeout` seconds; the task fails with the reason "
    "if it does not (force it off then). 409 if the VM is not running.",
    "poweroff": "Force the VM off at once (like pulling the plug). 409 if it is shut off.",
    "reboot": "Ask the guest OS to reboot (ACPI). 409 if the VM is not running.",
    "suspend": "Pause the VM (its vCPUs stop; memory is kept). 409 if it is not running.",
    "resume": "Resume a paused VM. 409 if it is not paused.",
}


class VMClone(APIView):
    audit_actions = {"POST": "vm.clone"}

    @extend_schema(
        request=CloneInput,
        responses={202: TaskSerializer},
        description="Clone a shut-off VM with its snapshots; the Task's target_uri is the clone.",
    )
    def post(self, request, vm: str):
        body = parse(CloneInput, request) if request.data else {}
        return task_response(lifecycle.request_clone(Actor.from_request(request), vm, body.get("name") or None))


class VMDetail(APIView):
    audit_actions = {"DELETE": "vm.delete"}

    @extend_schema(responses=VMSchema)
    def get(self, request, vm: str):
        info, current = services.vm_detail(request.user, vm)
        return Response(services.vm_dict(info, current))

    @extend_schema(
        request=DeleteInput,
        responses={202: TaskSerializer},
        parameters=[OpenApiParameter("storage", bool, description="true: also remove disk files no other VM uses")],
        description="Stop the VM if it runs, delete its snapshots (leaves first), undefine it (NVRAM too).",
    )
    def delete(self, request, vm: str):
        body = parse(DeleteInput, request) if request.data else {}
        storage = _flag(request.query_params["storage"], "storage") if "storage" in request.query_params else False
        if "storage" in body:
            if "storage" in request.query_params and body["storage"] != storage:
                raise Invalid("storage in the query and in the body differ: send one.")
            storage = body["storage"]
        return task_response(lifecycle.request_delete(Actor.from_request(request), vm, storage=storage))
