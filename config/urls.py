"""URL composition: the API under /api/, admin, and each app's pages. Nothing imports this."""

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.utils.functional import lazy
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

api = [
    path("", include("vms.api_urls")),
    path("", include("snapshots.api_urls")),
    path("", include("operations.api_urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]

urlpatterns = [
    path("api/", include(api)),
    # Roles and grants moved from the vms app to access: old admin bookmarks still work.
    re_path(r"^admin/vms/(?P<rest>(?:role|grant)/.*)$", RedirectView.as_view(url="/admin/access/%(rest)s", permanent=True)),
    path("admin/", admin.site.urls),
    # Browsers ask for /favicon.ico whatever the page links: send them to the SVG one.
    path("favicon.ico", RedirectView.as_view(url=lazy(static, str)("favicon.svg"), permanent=True)),
    path("", include("vms.urls")),
    path("", include("snapshots.urls")),
    path("", include("operations.urls")),
]

# JSON under /api/ ({"code", "reason"}, like every API error), Django's pages elsewhere.
handler400 = "core.api.errors.bad_request"
handler404 = "core.api.errors.page_not_found"
handler500 = "core.api.errors.server_error"
