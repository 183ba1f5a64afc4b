from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from vms import services

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


class VMDetail(APIView):
    @extend_schema(responses=VMSchema)
    def get(self, request, vm: str):
        info, current = services.vm_detail(request.user, vm)
        return Response(services.vm_dict(info, current))
