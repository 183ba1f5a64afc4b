from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "VMs"

    def ready(self) -> None:
        # Registers the VM operation kinds (power, delete, clone) with the task runner.
        from vms import clone, power, removal  # noqa: F401
