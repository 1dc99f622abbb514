"""The one rule every identifier (user, content, event, session, device, job id) follows.

An identifier is **1 to 255 printable characters, not all whitespace**. Not
printable, and so refused anywhere: control characters (NUL, newline, tab, DEL,
C1), format characters (bidirectional overrides such as U+202E, zero-width
spaces and joiners, the byte-order mark, tag characters), line and paragraph
separators, and lone surrogates. These are what make an id invisible, make two
ids look alike, reorder a log line, or cannot be stored (PostgreSQL text holds no
NUL; a lone surrogate has no UTF-8 form).

The HTTP services and the playback bridge validate with :data:`Identifier` (a
pydantic type whose JSON schema carries :data:`IDENTIFIER_PATTERN`, so the
OpenAPI document states the same rule); anything else can call
:func:`identifier_problem`. This module is imported on first use (it loads
pydantic), not by ``import sona``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Final

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "IDENTIFIER_MAX_LENGTH",
    "IDENTIFIER_PATTERN",
    "IDENTIFIER_RULE",
    "NOT_PRINTABLE",
    "NOT_PRINTABLE_CHARACTER",
    "Identifier",
    "identifier_problem",
]

IDENTIFIER_MAX_LENGTH: Final = 255

#: Unicode categories Cc, Cf, Zl and Zp (Unicode 14) as a regex class body. Written out, not
#: computed, so the rule does not move with the Python build; a test checks it against
#: ``unicodedata``. BMP characters are ``\\u`` escapes; the few astral ones are literal characters
#: because ``\\U`` escapes mean something else to JavaScript (Swagger UI) and are unknown to some
#: JSON Schema validators.
NOT_PRINTABLE: Final = (
    r"\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    r"\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
#: The rule as a JSON Schema ``pattern`` (with ``minLength`` 1 and ``maxLength`` 255 beside it).
IDENTIFIER_PATTERN: Final = rf"^[^{NOT_PRINTABLE}]*[^\s{NOT_PRINTABLE}][^{NOT_PRINTABLE}]*$"
#: The rule in words: what a client is told when an id breaks it.
IDENTIFIER_RULE: Final = (
    f"an identifier is 1 to {IDENTIFIER_MAX_LENGTH} printable characters, not all whitespace "
    "(no control characters such as NUL or newline, no invisible format characters such as "
    "bidirectional overrides or zero-width spaces)"
)

#: One character an identifier may not hold: :data:`NOT_PRINTABLE` and lone surrogates (JSON can
#: spell ``"\ud800"`` but it has no UTF-8 form; kept out of :data:`IDENTIFIER_PATTERN`, where a
#: surrogate range is not a valid regex for Rust-based validators).
NOT_PRINTABLE_CHARACTER: Final = re.compile(f"[{NOT_PRINTABLE}\ud800-\udfff]")


def _describe(character: str) -> str:
    code = f"U+{ord(character):04X}"
    try:
        return f"{code} ({unicodedata.name(character)})"
    except ValueError:  # controls and surrogates have no name
        return f"{code} (a {'control character' if ord(character) < 0xA0 else 'lone surrogate'})"


def identifier_problem(value: object) -> str | None:
    """What is wrong with ``value`` as an identifier, in words, or ``None`` when it is fine."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > IDENTIFIER_MAX_LENGTH:
        return f"is {len(value)} characters long; at most {IDENTIFIER_MAX_LENGTH} are allowed"
    bad = NOT_PRINTABLE_CHARACTER.search(value)
    if bad is not None:
        return f"contains the non-printable character {_describe(bad.group())} at position {bad.start()}"
    if value.isspace():
        return "must not be all whitespace"
    return None


def _check(value: str) -> str:
    problem = identifier_problem(value)
    if problem is not None:
        context = {"problem": problem, "rule": IDENTIFIER_RULE}
        raise PydanticCustomError("identifier", "{problem}: {rule}", context)
    return value


#: A ``str`` that follows the identifier rule; the validation error says which part it breaks.
Identifier = Annotated[
    str,
    AfterValidator(_check),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": IDENTIFIER_MAX_LENGTH,
            "pattern": IDENTIFIER_PATTERN,
            "description": IDENTIFIER_RULE[0].upper() + IDENTIFIER_RULE[1:] + ".",
        }
    ),
]
