"""The vms app keeps no tables of its own yet: roles and grants live in access.models
(their tables kept the vms_ names when they moved)."""
