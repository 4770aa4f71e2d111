"""Does an upload's bytes match the content type it claims?

Binary types are recognised by their magic numbers with ``puremagic`` (pure Python, a large
signature table, maintained): the claimed type must be among the types the file's first
:data:`HEAD_BYTES` match, so an ELF or PE executable renamed to ``.png`` is refused. Text types
have no magic number: their bytes must be UTF-8 without NUL or other control characters
(tab, newline, carriage return and form feed aside), which every executable format fails.
"""

from __future__ import annotations

import codecs

import puremagic

HEAD_BYTES = 8192
TEXT_TYPES = frozenset({"text/plain", "text/csv", "application/json"})
_CONTROL = bytes(c for c in range(32) if c not in (9, 10, 12, 13)) + b"\x7f"


class ContentMismatch(Exception):
    """The bytes are not what the upload claimed; the message says what they look like."""


def detected_types(head: bytes) -> list[tuple[str, str]]:
    """(media type, description) of every signature ``head`` matches, best first."""
    try:
        matches = puremagic.magic_string(head)
    except puremagic.PureError:
        return []
    return [(m.mime_type, m.name) for m in matches]


class ContentCheck:
    """Fed an upload's bytes in order; raises :class:`ContentMismatch` as soon as they cannot
    be ``claimed``."""

    def __init__(self, claimed: str) -> None:
        self.claimed = claimed
        self.text = claimed in TEXT_TYPES
        self.head = bytearray()
        self.checked_head = False
        self.decoder = codecs.getincrementaldecoder("utf-8")()

    def feed(self, data: bytes) -> None:
        if self.text:
            self._check_text(data, final=False)
        elif not self.checked_head:
            self.head += data[: HEAD_BYTES - len(self.head)]
            if len(self.head) >= HEAD_BYTES:
                self._check_head()

    def close(self) -> None:
        """The last byte has been fed."""
        if self.text:
            self._check_text(b"", final=True)
        elif not self.checked_head:
            self._check_head()

    def _check_text(self, data: bytes, *, final: bool) -> None:
        if _has_control(data):
            raise ContentMismatch(f"the bytes hold control characters, not {self.claimed} text")
        try:
            self.decoder.decode(data, final=final)
        except UnicodeDecodeError as exc:
            raise ContentMismatch(f"the bytes are not UTF-8 {self.claimed} text") from exc

    def _check_head(self) -> None:
        self.checked_head = True
        found = detected_types(bytes(self.head))
        if any(mime == self.claimed for mime, _ in found):
            return
        looks = f"they look like {found[0][1]}" if found else "no known signature matches"
        raise ContentMismatch(f"the bytes are not {self.claimed}: {looks}")


def _has_control(data: bytes) -> bool:
    return len(data.translate(None, _CONTROL)) != len(data)
