"""Who may do what on which VM: the permission vocabulary, roles and grants (models),
and the one place every view, API view and task asks (``access.policy``)."""
