"""Reading and writing libvirt's XML with lxml: a parser that neither resolves entities
nor touches the network, and never string formatting. Disks are parsed here, once."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True)


def parse_xml(text: str | bytes) -> etree._Element:
    if isinstance(text, str):
        text = text.encode()
    return etree.fromstring(text, _PARSER)


def to_xml(element: etree._Element) -> str:
    return etree.tostring(element, encoding="unicode")


def text(element: etree._Element, path: str, default: str = "") -> str:
    found = element.find(path)
    return found.text if found is not None and found.text else default


@dataclass(frozen=True)
class Disk:
    """One ``<disk>`` of a domain: what it is, its format, and where it lives."""

    target: str
    device: str  # disk, cdrom, floppy, lun
    type: str  # file, block, network, volume, dir
    format: str  # qcow2, raw, ... ("" when unknown)
    source: str  # what to show: a file, a device, a volume or a network name
    path: str  # the file for type="file", else ""
    readonly: bool
    shareable: bool = False

    @property
    def needs_qcow2(self) -> bool:
        """Internal snapshots write into this disk: it must be qcow2."""
        return self.device in ("disk", "lun") and not self.readonly

    @property
    def writable(self) -> bool:
        """A disk this VM alone writes to: a clone copies it, a delete may remove it."""
        return self.device in ("disk", "lun") and not self.readonly and not self.shareable


def parse_disks(domain: etree._Element) -> tuple[Disk, ...]:
    disks = []
    for disk in domain.iterfind("devices/disk"):
        source = disk.find("source")
        target = disk.find("target")
        driver = disk.find("driver")
        kind = disk.get("type", "file")
        shown = ""
        if source is not None:
            shown = (
                source.get("file")
                or source.get("dev")
                or source.get("name")
                or (f"{source.get('pool')}/{source.get('volume')}" if source.get("volume") else "")
            )
        disks.append(
            Disk(
                target=target.get("dev", "") if target is not None else "",
                device=disk.get("device", "disk"),
                type=kind,
                format=driver.get("type", "") if driver is not None else "",
                source=shown,
                path=(source.get("file") or "") if source is not None and kind == "file" else "",
                readonly=disk.find("readonly") is not None,
                shareable=disk.find("shareable") is not None,
            )
        )
    return tuple(disks)


def disks_of(xml: str) -> tuple[Disk, ...]:
    """The disks of a domain XML document."""
    return parse_disks(parse_xml(xml))


def nvram_path(xml: str) -> str:
    """The UEFI variable store file of a domain XML, or ""."""
    nvram = parse_xml(xml).find("os/nvram")
    return (nvram.text or "").strip() if nvram is not None else ""


def referenced_files(xml: str) -> dict[str, str]:
    """{file: its format} for every file a domain XML names as a disk source, backing
    stores included; the format is the definition's ("" when it names none)."""
    found: dict[str, str] = {}
    for disk in parse_xml(xml).iterfind(".//devices/disk"):
        driver = disk.find("driver")
        layers = [(disk, driver.get("type", "") if driver is not None else "")]
        layers += [
            (store, (store.find("format").get("type", "") if store.find("format") is not None else ""))
            for store in disk.iterfind(".//backingStore")
        ]
        for layer, fmt in layers:
            source = layer.find("source")
            if source is not None and source.get("file"):
                found.setdefault(source.get("file"), fmt)
    return found


def to_mib(value: int, unit: str) -> int:
    factors = {"b": 1 / 2**20, "bytes": 1 / 2**20, "kib": 1 / 1024, "k": 1 / 1024, "mib": 1, "m": 1, "gib": 1024, "g": 1024}
    return int(value * factors.get(unit.lower(), 1 / 1024))
