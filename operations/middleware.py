from operations.audit import new_request_id


class RequestIdMiddleware:
    """Give every request an id (or keep the proxy's X-Request-ID) for the audit trail."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")[:64]
        request.request_id = incoming if incoming.replace("-", "").isalnum() else new_request_id()
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response
