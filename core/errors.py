"""Errors the CLI turns into one line and exit status 2, and bounded views of bad values for them."""

from __future__ import annotations

import reprlib
from typing import Any

MAX_MESSAGE_CHARS = 500
"""A UserError's message is cut to this length: a hostile value never floods the terminal."""

_SHOWN = reprlib.Repr()
for _limit, _value in dict(
    maxlevel=3, maxdict=6, maxlist=8, maxtuple=8, maxset=8, maxstring=120, maxother=120, maxlong=60
).items():
    setattr(_SHOWN, _limit, _value)  # Python 3.11's Repr takes no keyword arguments


class UserError(ValueError):
    """Bad input from the user (spec, flags, address): one line naming the field and what is allowed.

    The message is folded onto one line and cut to ``MAX_MESSAGE_CHARS`` characters.
    """

    def __init__(self, message: str) -> None:
        text = " ".join(str(message).split())
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[: MAX_MESSAGE_CHARS - 3] + "..."
        super().__init__(text)


class ClusterLost(RuntimeError):
    """The Ray cluster's head stopped answering mid-run: the CLI prints one line and exits 3; what is stored stays."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split())[:MAX_MESSAGE_CHARS])


def shown(value: Any) -> str:
    """A short repr of ``value`` for an error message, computed without expanding it whole.

    A 10^7-element list or a deeply shared YAML alias tree costs a few elements here, not the
    memory of its full repr.
    """
    try:
        return _SHOWN.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
