from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "VMs and access"

    def ready(self) -> None:
        # Registers the VM operation kinds (power, delete, clone) with the task runner.
        from vms import lifecycle  # noqa: F401
        from vms import signals  # noqa: F401  (built-in roles after migrate and flush)
