"""The bottom layer: errors, the one door to libvirt (``core.hypervisor``), disk files,
name rules and the API's plumbing. It has no models and imports no other app."""
