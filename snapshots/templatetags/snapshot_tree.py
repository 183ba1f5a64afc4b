"""``{% snapshot_items rows %}`` and ``{% snapshot_item row %}``: see ``snapshots.render``."""

from django import template
from django.utils.safestring import SafeString, mark_safe

from snapshots import render

register = template.Library()


@register.simple_tag(takes_context=True)
def snapshot_items(context: template.Context, rows: list) -> SafeString:
    """Every item of the snapshot tree."""
    return render.items(rows, context)


@register.simple_tag(takes_context=True)
def snapshot_item(context: template.Context, row) -> SafeString:
    """One item, for the htmx answers that swap a single item."""
    return mark_safe(render.item(row, render.ItemFlags.from_context(context), context))  # escaped in item()
