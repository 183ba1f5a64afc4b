from django.apps import AppConfig


class SnapshotsConfig(AppConfig):
    name = "snapshots"
    verbose_name = "Snapshots"

    def ready(self) -> None:
        # Registers the snapshot operation kinds with the task runner.
        from snapshots import services  # noqa: F401
