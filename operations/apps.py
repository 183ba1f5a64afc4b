from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Tasks and audit"

    def ready(self) -> None:
        from operations import signals  # noqa: F401
