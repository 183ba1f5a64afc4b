from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "access"
    verbose_name = "VMs and access"

    def ready(self) -> None:
        # Re-creates the built-in roles after every migrate and flush.
        from access import roles  # noqa: F401
