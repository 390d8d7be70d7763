"""Errors the CLI turns into one line and exit status 2."""


class UserError(ValueError):
    """Bad input from the user (spec, flags, address): one line naming the field and what is allowed."""
