from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "VMs and access"

    def ready(self) -> None:
        # lifecycle registers the VM operation kinds (power, delete, clone) with the task
        # runner; signals re-create the built-in roles after migrate and flush.
        from vms import lifecycle, signals  # noqa: F401
