"""The README's configuration table names every variable the settings and `make run` read."""

import re
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
BUILD_ONLY = {"VENV"}  # where the virtualenv goes: a build detail, not configuration


def documented() -> set[str]:
    rows = re.findall(r"^\|.*\|$", (ROOT / "README.md").read_text(), re.M)
    return {name for row in rows for name in re.findall(r"`([A-Z_]+)`", row)}


def test_every_setting_from_the_environment_is_in_the_readme():
    source = (ROOT / "config" / "settings.py").read_text()
    read = set(re.findall(r"""(?:environ\.get|environ\[|env[a-z]*)\(?["']([A-Z_]+)["']""", source))
    assert {"DEBUG", "LIBVIRT_URI", "TIME_ZONE"} <= read  # the pattern finds them
    assert read - documented() == set()


def test_make_runs_variables_are_in_the_readme():
    variables = set(re.findall(r"^([A-Z_]+) \?=", (ROOT / "Makefile").read_text(), re.M)) - BUILD_ONLY
    assert {"HOST", "PORT"} <= variables
    assert variables - documented() == set()
