"""The project's exceptions: each carries the HTTP status it answers with and a
message a person understands. Services and the hypervisor gateway raise them;
the API's exception handler and the HTML error middleware turn them into answers."""


class AppError(Exception):
    status = 500

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        # The input field the error is about, when there is one (forms show it there).
        self.field = field


class Invalid(AppError):
    """Bad input, or an operation that is impossible for this VM."""

    status = 400


class Forbidden(AppError):
    status = 403


class NotFound(AppError):
    status = 404


class Conflict(AppError):
    """Name taken, wrong state, or another operation running on the VM."""

    status = 409


class Failed(AppError):
    """libvirt tried and failed."""

    status = 502


class Unavailable(AppError):
    """libvirtd cannot be reached."""

    status = 503


class ConnectionLost(Unavailable):
    """libvirtd went away in the middle of a call that changes something: it may or
    may not have happened, so look at what libvirt shows before saying which."""


def in_place(exc: AppError) -> AppError:
    """A refusal a page shows where the user asked (in the form, the dialog), returned;
    403 and 404 are raised again for the error page (a hidden VM looks like none)."""
    if exc.status in (403, 404):
        raise exc
    return exc
