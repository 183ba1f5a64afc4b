"""Reading API input: serializers that refuse unknown fields, name fields documented
from their rule, query flags, and the one way views parse a body or a query."""

from collections.abc import Mapping

from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import get_class
from rest_framework import exceptions, serializers
from rest_framework.fields import empty

from core.names import NameRule

NOT_AN_OBJECT = "The body must be a JSON object ({...}), or nothing."


class StrictSerializer(serializers.Serializer):
    """Input serializer that refuses fields it does not know (a typo is an error, not a no-op)."""

    def run_validation(self, data=empty):
        # Before DRF's own checks: null is "No data provided" there, and a list or a
        # string should get the same answer as any other body that is not an object.
        if data is not empty and not isinstance(data, Mapping):
            raise serializers.ValidationError({"non_field_errors": [NOT_AN_OBJECT]})
        return super().run_validation(data)

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            raise serializers.ValidationError({"non_field_errors": [NOT_AN_OBJECT]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            allowed = f"Allowed: {', '.join(self.fields)}." if self.fields else "This request takes none: send {} or no body."
            raise serializers.ValidationError({"non_field_errors": [f"Unknown field(s): {', '.join(unknown)}. {allowed}"]})
        return super().to_internal_value(data)


class NameField(serializers.CharField):
    """A name the service checks and explains with ``rule`` (core.names); the schema
    documents the same rule as a pattern, its length and its words."""

    def __init__(self, *, rule: NameRule, help_text: str = "", **kwargs):
        self.pattern = rule.pattern
        # " web1" is not "web1": the service refuses it, as the pattern says.
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(max_length=rule.max_length, help_text=help_text or rule.text, **kwargs)


class StrictSerializerSchema(OpenApiSerializerExtension):
    """OpenAPI: a StrictSerializer's object takes no other properties."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        # Not StrictSerializer's docstring, which the subclasses inherit.
        own = get_class(self.target).__doc__
        return {**schema, "description": own or "Unknown fields are refused (400).", "additionalProperties": False}


class NameFieldSchema(OpenApiSerializerFieldExtension):
    target_class = NameField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        # drf-spectacular adds the blank alternative itself when the field allows it.
        return {"type": "string", "pattern": f"^(?:{field.pattern})$", "maxLength": field.max_length}


class QueryFlag(serializers.BooleanField):
    """true or false in a query string (also 1/0, yes/no, on/off); absent or empty means not given."""

    default_empty_html = empty  # DRF's default suits an unchecked checkbox: false
    default_error_messages = {"invalid": "Must be true or false."}


def parse_body(serializer_class: type[serializers.Serializer], request) -> dict:
    """The one way views read a request body: validated by ``serializer_class`` (an
    empty body is an empty object), or a 400/413/415 that says why not."""
    try:
        data = request.data
    except RecursionError:
        # json gives up on deep nesting with RecursionError, which DRF does not expect.
        raise exceptions.ParseError("it is nested too deeply") from None
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def parse_query(serializer_class: type[serializers.Serializer], request) -> dict:
    """Query parameters, validated by ``serializer_class`` (unknown ones are ignored)."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
