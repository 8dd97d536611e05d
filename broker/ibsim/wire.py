"""The TWS API wire format: framing, field text and the opening handshake.

Everything on the socket after the handshake is a *message*: a 4-byte big-endian length,
then that many bytes of UTF-8 text made of fields, each one terminated by a NUL byte. A field
is always text; the receiver converts it according to its position in the message, so the
codec here knows nothing of message types. It only turns Python values into field text
(`to_field`), fields into frames (`encode_frame`), a byte stream back into field lists
(`FrameBuffer`), and reads typed values off a received message (`FieldReader`).

Conversions follow the convention of IB's own client: an empty field means "unset", booleans
are "1"/"0", and numbers are written in plain decimal notation. Money and quantities are
`Decimal` on our side and travel as their exact decimal text, so nothing passes through a
binary float on the way out.

The handshake is the one exception to framing: the client first sends the 4 raw bytes
`API\\0`, then one framed string `v<min>..<max>[ options]`; the server answers with a framed
message of exactly two fields, `[serverVersion, connectionTime]`.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation

SERVER_VERSION = 178
MIN_CLIENT_VERSION = 157
API_PREFIX = b"API\0"
LENGTH = struct.Struct(">I")
# Anything this large is not a TWS message; refusing it keeps a garbage peer from making the
# server buffer gigabytes while it waits for the "rest" of a frame.
MAX_FRAME = 16 * 1024 * 1024


class WireError(Exception):
    """The peer sent something that is not the TWS API protocol."""


def format_decimal(value: Decimal) -> str:
    """Plain decimal text without exponent or superfluous trailing zeros ("2", "0.1")."""
    if not value.is_finite():
        raise WireError(f"cannot send non-finite number {value}")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def to_field(value: object) -> str:
    """One Python value as field text. None is the empty ("unset") field."""
    if value is None:
        return ""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # Only for values that are floats by nature (e.g. a bar's average); repr is the
        # shortest text that reads back as the same float.
        return repr(value)
    if isinstance(value, str):
        if "\0" in value:
            raise WireError("a field cannot contain NUL")
        return value
    raise TypeError(f"no wire form for {type(value).__name__}: {value!r}")


def encode_frame(fields: Iterable[object]) -> bytes:
    """A complete message: length prefix plus NUL-terminated fields."""
    body = "".join(to_field(f) + "\0" for f in fields).encode()
    return LENGTH.pack(len(body)) + body


def encode_handshake_reply(server_version: int, when: dt.datetime) -> bytes:
    return encode_frame([server_version, format_connection_time(when)])


def format_connection_time(when: dt.datetime) -> str:
    # TWS writes e.g. "20251127 09:30:00 EST"; the client only stores it.
    return when.astimezone(dt.timezone.utc).strftime("%Y%m%d %H:%M:%S UTC")


def format_ib_time(when: dt.datetime) -> str:
    """An execution time as ib_async parses it back into an aware datetime."""
    if when.tzinfo is None:
        raise ValueError("naive datetime on the wire")
    return when.astimezone(dt.timezone.utc).strftime("%Y%m%d %H:%M:%S UTC")


class FrameBuffer:
    """Accumulates received bytes and yields each complete message as a list of fields."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> Iterator[list[str]]:
        self._data += data
        while len(self._data) >= 4:
            (size,) = LENGTH.unpack_from(self._data)
            if size > MAX_FRAME:
                raise WireError(f"frame of {size} bytes")
            if len(self._data) < 4 + size:
                return
            body = bytes(self._data[4 : 4 + size])
            del self._data[: 4 + size]
            yield split_fields(body)

    def take_raw(self, n: int) -> bytes | None:
        """The next n raw bytes (the handshake's `API\\0`), or None if not yet received."""
        if len(self._data) < n:
            return None
        raw = bytes(self._data[:n])
        del self._data[:n]
        return raw


def split_fields(body: bytes) -> list[str]:
    text = body.decode("utf-8", errors="replace")
    if not text:
        return []
    if not text.endswith("\0"):
        raise WireError("message does not end with NUL")
    return text[:-1].split("\0")


def parse_version_range(body: bytes) -> tuple[int, int, str]:
    """The client's `v157..178 +OPTIONS` announcement -> (min, max, options)."""
    text = body.decode("ascii", errors="replace").rstrip("\0")
    if not text.startswith("v"):
        raise WireError(f"bad version announcement {text!r}")
    head, _, options = text[1:].partition(" ")
    low, sep, high = head.partition("..")
    try:
        lo = int(low)
        hi = int(high) if sep else lo
    except ValueError as exc:
        raise WireError(f"bad version announcement {text!r}") from exc
    return lo, hi, options


def negotiate(client_min: int, client_max: int) -> int:
    """The version both sides speak; the simulator only speaks SERVER_VERSION."""
    if client_min > SERVER_VERSION or client_max < SERVER_VERSION:
        raise WireError(
            f"client speaks v{client_min}..{client_max}; this gateway speaks v{SERVER_VERSION}"
        )
    return SERVER_VERSION


class FieldReader:
    """Reads a received message field by field, with the client's typing conventions."""

    def __init__(self, fields: list[str], start: int = 0) -> None:
        self.fields = fields
        self.pos = start

    def remaining(self) -> int:
        return len(self.fields) - self.pos

    def str(self) -> str:
        # A message cut short reads as empty fields rather than raising: old clients omit
        # trailing fields, and "" is the client's own spelling of unset.
        if self.pos >= len(self.fields):
            self.pos += 1
            return ""
        value = self.fields[self.pos]
        self.pos += 1
        return value

    def int(self, default: int = 0) -> int:
        text = self.str()
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            return int(float(text))

    def bool(self) -> bool:
        text = self.str()
        return text not in ("", "0", "False", "false")

    def decimal(self, default: Decimal | None = None) -> Decimal | None:
        text = self.str()
        if not text or text == "1.7976931348623157e+308":  # IB's UNSET_DOUBLE
            return default
        try:
            return Decimal(text)
        except InvalidOperation as exc:
            raise WireError(f"not a number: {text!r}") from exc

    def skip(self, n: int = 1) -> None:
        self.pos += n
