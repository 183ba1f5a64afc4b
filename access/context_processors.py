"""What every page needs to know of the user: whether to show the audit link."""

from access.policy import access_for


def navigation(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"nav_can_audit": access_for(user).can_audit}
