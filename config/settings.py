"""Settings, driven by environment variables with working defaults.

Only a handful of knobs: see the configuration table in README.md.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str = "False") -> bool:
    return os.environ.get(name, default).strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


DEBUG = envbool("DEBUG", "False")


def _secret_key() -> str:
    """SECRET_KEY from the environment; else a random key kept in a private file
    beside the database (made on first start), never a guessable constant."""
    key = os.environ.get("SECRET_KEY", "")
    if key:
        return key
    path = Path(os.environ.get("SECRET_KEY_FILE", BASE_DIR / ".secret_key"))
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        import secrets

        key = secrets.token_urlsafe(50)
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        try:
            os.link(tmp, path)  # atomic: if two processes start at once, the first wins
        except FileExistsError:
            key = path.read_text().strip()
        finally:
            os.unlink(tmp)
        return key


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

LIBVIRT_URI = os.environ.get("LIBVIRT_URI", "qemu:///system")
# Where `demo_vms` and clones put new disk images.
VM_IMAGE_DIR = os.environ.get("VM_IMAGE_DIR", "/var/lib/libvirt/images")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_q",
    # The project's layers, lowest first: core (no models) <- access <- operations <- snapshots <- vms.
    "access",
    "operations",
    "snapshots",
    "vms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files served by the app itself (no CDN, no separate web server needed).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "operations.middleware.RequestIdMiddleware",
    "core.api.errors.HypervisorErrorMiddleware",
]

ROOT_URLCONF = "config.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "access.context_processors.navigation",
            ],
        },
    },
]
WSGI_APPLICATION = "config.wsgi.application"

_sqlite_options = {
    # A second writer (the django-q2 worker) shares the file: take the write lock
    # up front and wait for it, instead of failing with "database is locked".
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA synchronous=NORMAL;",
}
DATABASES = {
    "default": dj_database_url.parse(os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"), conn_max_age=60)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = _sqlite_options
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not memory: the qcluster started by end-to-end tests must see it.
    # One file per test run, so parallel runs on one machine don't share it.
    DATABASES["default"]["TEST"] = {"NAME": f"/tmp/virtsnap-test-{os.getpid()}.sqlite3"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Django's username/password check, with failed logins rate limited (operations/login_guard.py).
AUTHENTICATION_BACKENDS = ["operations.login_guard.GuardedModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "vm-list"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", 8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = envbool("SECURE_COOKIES", "False")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
CSRF_FAILURE_VIEW = "operations.middleware.csrf_failure"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve from the apps' static folders too, so `runserver` works before collectstatic.
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: a 401 challenges with "WWW-Authenticate: Token", which no browser
        # answers with a login prompt whose credentials it would then send cross-site.
        "operations.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        # Last, and never a challenge: Basic as scripts send it (operations/authentication.py).
        "operations.authentication.ScriptBasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "operations.api_errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Virtsnap API",
    "DESCRIPTION": "libvirt VMs and their snapshot trees. Errors are "
    '`{"code": <status>, "reason": "..."}`; long operations answer 202 with a Task.',
    "VERSION": "1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Served by the app itself: the machines it runs on are often offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Seconds a graceful (ACPI) shutdown waits for the guest OS before the task fails.
SHUTDOWN_TIMEOUT = envint("SHUTDOWN_TIMEOUT", 60)

# django-q2 only delivers work; our Operation rows are the history.
TASK_TIMEOUT = envint("TASK_TIMEOUT", 1800)
Q_CLUSTER = {
    "name": "virtsnap",
    "orm": "default",
    "workers": envint("Q_WORKERS", 2),
    "timeout": TASK_TIMEOUT,
    "retry": TASK_TIMEOUT + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 100,
    # Seconds between looks at an empty ORM queue: the wait before a worker picks a task
    # up is half of it on average (a look is one small query).
    "poll": float(os.environ.get("Q_POLL", "0.02")),
    "catch_up": False,
    "label": "Background tasks",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}

# Behind a reverse proxy that sets X-Forwarded-For, take the client IP from it.
TRUST_X_FORWARDED_FOR = envbool("TRUST_X_FORWARDED_FOR", "False")
