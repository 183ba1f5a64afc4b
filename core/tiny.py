"""Tiny VMs without an OS, made and removed: for the demo command, the tests and the benchmarks.

64 MiB of memory, one empty disk, TCG (no /dev/kvm needed), no network: such a VM
starts in well under a second and takes real snapshots with memory.
"""

from __future__ import annotations

import subprocess
import uuid as uuidlib
from pathlib import Path

from django.conf import settings
from lxml import etree

from core import hypervisor

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def create_disk(path: Path, fmt: str = "qcow2", size: str = "64M") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)


def tiny_vm_xml(
    name: str,
    disks: list[tuple[Path, str]],
    *,
    memory_mib: int = 64,
    vcpus: int = 1,
    loader_file: Path | None = None,
    pflash: Path | None = None,
) -> str:
    """Domain XML (built with lxml) for a VM with the given (path, format) disks.

    ``loader_file`` fills guest RAM with that file's bytes at start (QEMU's loader
    device), which makes memory snapshots and reverts take real time.
    """
    root = etree.Element("domain", type="qemu", nsmap={"qemu": QEMU_NS} if loader_file else None)
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "uuid").text = str(uuidlib.uuid4())
    etree.SubElement(root, "memory", unit="MiB").text = str(memory_mib)
    etree.SubElement(root, "vcpu").text = str(vcpus)
    os_el = etree.SubElement(root, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    if pflash:
        etree.SubElement(os_el, "loader", readonly="yes", type="pflash").text = str(pflash)
    if pflash:
        etree.SubElement(etree.SubElement(root, "features"), "acpi")
    etree.SubElement(root, "on_crash").text = "destroy"
    devices = etree.SubElement(root, "devices")
    for i, (path, fmt) in enumerate(disks):
        disk = etree.SubElement(devices, "disk", type="file", device="disk")
        etree.SubElement(disk, "driver", name="qemu", type=fmt)
        etree.SubElement(disk, "source", file=str(path))
        etree.SubElement(disk, "target", dev=f"vd{chr(ord('a') + i)}", bus="virtio")
    etree.SubElement(devices, "memballoon", model="none")
    if loader_file:
        cmd = etree.SubElement(root, f"{{{QEMU_NS}}}commandline")
        for arg in ("-device", f"loader,file={loader_file},addr=0x1000000,force-raw=on"):
            etree.SubElement(cmd, f"{{{QEMU_NS}}}arg", value=arg)
    return hypervisor.to_xml(root)


def create_tiny_vm(name: str, *, image_dir: Path | None = None, disk_format: str = "qcow2", **kwargs) -> hypervisor.VMInfo:
    image_dir = Path(image_dir or settings.VM_IMAGE_DIR)
    disk = image_dir / f"{name}.{disk_format}"
    create_disk(disk, disk_format)
    return hypervisor.define_vm(tiny_vm_xml(name, [(disk, disk_format)], **kwargs))


def remove_vm(ref: str) -> None:
    """Stop a tiny VM, delete every snapshot (leaves first, one at a time) and undefine it."""
    try:
        vm = hypervisor.get_vm(ref)
    except hypervisor.NotFound:
        return
    if vm.is_active:
        try:
            hypervisor.power(vm.uuid, "poweroff")
        except hypervisor.HypervisorError:
            pass
    names, _ = hypervisor.snapshot_names(vm.uuid)
    for info in hypervisor.leaves_first(hypervisor.get_snapshots(vm.uuid, names)):
        hypervisor.delete_snapshot(vm.uuid, info.name)
    hypervisor.undefine_vm(vm.uuid)
