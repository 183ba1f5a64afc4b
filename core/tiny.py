"""Tiny VMs, made and removed: for the demo command, the tests and the benchmarks.

Without an OS: 64 MiB of memory, one empty disk, TCG (no /dev/kvm needed), no
network; such a VM starts in well under a second and takes real snapshots with memory.
The tiny guest: a Linux that answers (ACPI power button, guest agent, a boot counter on
its disk), booted from the kernel and initramfs ``scripts/tiny-guest`` builds.
"""

from __future__ import annotations

import subprocess
import uuid as uuidlib
from pathlib import Path

from django.conf import settings
from lxml import etree

from core import hypervisor

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
TINY_GUEST_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "tiny-guest"


def create_disk(path: Path, fmt: str = "qcow2", size: str = "64M") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)


def _domain(name: str, memory_mib: int, vcpus: int, nsmap: dict | None = None) -> etree._Element:
    """A ``<domain>`` with its name, a new UUID, memory, vCPUs and an x86_64 ``<os>``."""
    root = etree.Element("domain", type="qemu", nsmap=nsmap)
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "uuid").text = str(uuidlib.uuid4())
    etree.SubElement(root, "memory", unit="MiB").text = str(memory_mib)
    etree.SubElement(root, "vcpu").text = str(vcpus)
    os_el = etree.SubElement(root, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    return root


def _add_disk(devices: etree._Element, index: int, path: Path, fmt: str) -> None:
    disk = etree.SubElement(devices, "disk", type="file", device="disk")
    etree.SubElement(disk, "driver", name="qemu", type=fmt)
    etree.SubElement(disk, "source", file=str(path))
    etree.SubElement(disk, "target", dev=f"vd{chr(ord('a') + index)}", bus="virtio")


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
    root = _domain(name, memory_mib, vcpus, nsmap={"qemu": QEMU_NS} if loader_file else None)
    os_el = root.find("os")
    if pflash:
        etree.SubElement(os_el, "loader", readonly="yes", type="pflash").text = str(pflash)
    if pflash:
        etree.SubElement(etree.SubElement(root, "features"), "acpi")
    etree.SubElement(root, "on_crash").text = "destroy"
    devices = etree.SubElement(root, "devices")
    for i, (path, fmt) in enumerate(disks):
        _add_disk(devices, i, path, fmt)
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


def build_guest(guest_dir: Path) -> Path:
    """Build (once, then cached) the tiny guest's kernel and initramfs in ``guest_dir``."""
    subprocess.run([str(TINY_GUEST_SCRIPT), str(guest_dir)], check=True, stdout=subprocess.DEVNULL)
    return guest_dir


def console_log(image_dir: Path, name: str) -> Path:
    """The file the tiny guest's serial console writes to: its kernel and init messages."""
    return Path(image_dir) / f"{name}.console.log"


def tiny_guest_xml(name: str, guest_dir: Path, disk: Path, console: Path, *, memory_mib: int = 256, agent: bool = True) -> str:
    """Domain XML (built with lxml) for the tiny guest built in ``guest_dir``.

    Direct kernel boot, ACPI on (the power button; and ``poweroff`` needs it to switch
    the VM off), one qcow2 disk, the serial console in the file ``console``, and, with
    ``agent``, the virtio-serial channel its guest agent answers on.
    """
    root = _domain(name, memory_mib, 1)
    os_el = root.find("os")
    etree.SubElement(os_el, "kernel").text = str(Path(guest_dir) / "vmlinuz")
    etree.SubElement(os_el, "initrd").text = str(Path(guest_dir) / "initrd.img")
    etree.SubElement(os_el, "cmdline").text = "console=ttyS0 quiet"
    etree.SubElement(etree.SubElement(root, "features"), "acpi")
    etree.SubElement(root, "on_crash").text = "destroy"
    devices = etree.SubElement(root, "devices")
    _add_disk(devices, 0, disk, "qcow2")
    serial = etree.SubElement(devices, "serial", type="file")
    etree.SubElement(serial, "source", path=str(console))
    etree.SubElement(serial, "target", port="0")
    # Entropy from the host: without it, the first boot's mke2fs waits a second for the kernel's.
    rng = etree.SubElement(devices, "rng", model="virtio")
    etree.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    if agent:
        channel = etree.SubElement(devices, "channel", type="unix")
        etree.SubElement(channel, "target", type="virtio", name=AGENT_CHANNEL)
    etree.SubElement(devices, "memballoon", model="none")
    return hypervisor.to_xml(root)


def create_tiny_guest(name: str, guest_dir: Path, *, image_dir: Path | None = None, **kwargs) -> hypervisor.VMInfo:
    """Define (not start) a tiny guest with a new, empty disk (the guest formats it);
    ``kwargs`` go to ``tiny_guest_xml`` (``memory_mib``, ``agent``)."""
    image_dir = Path(image_dir or settings.VM_IMAGE_DIR)
    disk = image_dir / f"{name}.qcow2"
    create_disk(disk, "qcow2", size="16M")
    return hypervisor.define_vm(tiny_guest_xml(name, guest_dir, disk, console_log(image_dir, name), **kwargs))


def agent_connected(ref: str) -> bool:
    """The guest agent has opened its channel (libvirt shows it in the live XML)."""
    xml = hypervisor.parse_xml(hypervisor.domain_xml(ref, inactive=False))
    return any(
        target.get("state") == "connected"
        for target in xml.iterfind("devices/channel/target")
        if target.get("name") == AGENT_CHANNEL
    )


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
