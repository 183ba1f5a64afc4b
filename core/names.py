"""Name rules, each written once: the check, its message, the help text forms show
and the pattern the OpenAPI schema documents all come from one ``NameRule``."""

from __future__ import annotations

import re
import uuid as uuidlib
from dataclasses import dataclass

from core.errors import Invalid

# What uuid.UUID() takes besides the usual form: 32 hex digits with hyphens anywhere,
# and int()'s single underscores between digits.
_UUID_LOOKALIKE = r"(?!(?!.*_-*_)(?!.*_-*$)(?:[0-9A-Fa-f_]-*){32}$)"


@dataclass(frozen=True)
class NameRule:
    what: str  # "snapshot", "VM"
    max_length: int
    reserved: tuple[str, ...] = ()  # refused in any case
    no_uuid: bool = False  # a name must not be taken for a UUID

    @property
    def regex(self) -> re.Pattern:
        return re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{self.max_length - 1}}}$")

    @property
    def text(self) -> str:
        """The rule in words, for help texts and error messages."""
        parts = [
            f"1 to {self.max_length} letters, digits, '.', '_' or '-'",
            "starting with a letter or digit",
            "not only digits",
        ]
        if self.no_uuid:
            parts.append("not a UUID")
        parts += [f"not '{word}'" for word in self.reserved]
        return ", ".join(parts[:-1]) + ", and " + parts[-1]

    @property
    def pattern(self) -> str:
        """The same rule as one regular expression without anchors (OpenAPI ``pattern``)."""
        lookaheads = r"(?![0-9]+$)"
        for word in self.reserved:
            lookaheads += "(?!" + "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word) + "$)"
        if self.no_uuid:
            lookaheads += _UUID_LOOKALIKE
        return lookaheads + self.regex.pattern.strip("^$")

    def breaks(self, name) -> bool:
        return (
            not isinstance(name, str)
            or not self.regex.match(name)
            or name.isdigit()
            or name.lower() in self.reserved
            or (self.no_uuid and _is_uuid(name))
        )

    def validate(self, name, *, field: str | None = "name") -> str:
        if self.breaks(name):
            raise Invalid(f"Invalid {self.what} name {name!r}: use {self.text}.", field=field)
        return name


def _is_uuid(name: str) -> bool:
    try:
        uuidlib.UUID(name)
    except ValueError:
        return False
    return True


SNAPSHOT_NAME = NameRule("snapshot", 64, reserved=("current",))
VM_NAME = NameRule("VM", 100, no_uuid=True)
