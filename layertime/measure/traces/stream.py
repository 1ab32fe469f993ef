"""Read a Chrome/Kineto trace file as a stream of events, with one-line errors.

A trace is one JSON object whose ``traceEvents`` array holds the events (or, as the
Chrome trace format allows, a bare array of events).  The file is read in chunks and
each event decoded on its own (the standard library's decoder, from where the last one
ended), so only the events a caller keeps stay in memory: a trace of hundreds of
megabytes is never held as one string or one tree of dicts.  ``.gz`` files are read
through ``gzip`` the same way.

A file that is not a trace, that breaks off (an interrupted write, a truncated copy) or
is garbled raises :class:`TraceFormatError`, one line saying the file and where it broke
(line, column, character offset).
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from layertime.errors import BadValue

T = TypeVar("T")

#: Bytes read at a time; an event is decoded once the buffer holds all of it.
CHUNK_CHARS = 1 << 20
#: A decode error this close to the end of the buffer may be an event cut by the chunk.
_TAIL_CHARS = 1 << 16
#: At the end of the file, an error this close to its end is the file ending (a string
#: cut short is reported where it starts).
_STRING_CHARS = 512
_WS = re.compile(r"[ \t\n\r]*")
#: Between two events: a comma in whitespace (group 1), or whitespace alone before the first.
_SEP = re.compile(r"[ \t\n\r]*(,)?[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class TraceFormatError(BadValue):
    """A trace file that cannot be read: truncated, garbled, or not a trace at all."""


def _open_binary(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115 (closed by the reader)


class _Buffer:
    """The text read so far and not yet consumed, with where it sits in the file."""

    def __init__(self, path: Path, fh: io.BufferedIOBase) -> None:
        self.path = path
        self._fh = fh
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self.text = ""
        self.pos = 0  # in text
        self.offset = 0  # characters of the file before text[0]
        self.lines = 0  # newlines in the file before text[0]
        self.eof = False

    def more(self) -> bool:
        """Read another chunk; False at the end of the file."""
        if self.eof:
            return False
        try:
            data = self._fh.read1(CHUNK_CHARS)
            chunk = self._decode.decode(data, final=not data)
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
            raise TraceFormatError(
                f"{self.path}: the compressed data breaks off near character "
                f"{self.offset + len(self.text):,} ({e}): the file is truncated or damaged"
            ) from None
        except UnicodeDecodeError as e:
            raise TraceFormatError(
                f"{self.path}: not UTF-8 text near character {self.offset + len(self.text):,} "
                f"({e.reason}): not a trace file"
            ) from None
        if not data:
            self.eof = True
            self.text += chunk
            return bool(chunk)
        if self.pos > CHUNK_CHARS:
            done = self.text[: self.pos]
            self.lines += done.count("\n")
            self.offset += self.pos
            self.text = self.text[self.pos:]
            self.pos = 0
        self.text += chunk
        return True

    def skip_ws(self) -> str:
        """The next non-space character (without consuming it), or "" at the end."""
        while True:
            self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def where(self, pos: int) -> str:
        """Line, column and character offset of ``pos`` (an index into ``text``)."""
        line = self.lines + self.text.count("\n", 0, pos) + 1
        start = self.text.rfind("\n", 0, pos) + 1
        col = pos - start + 1 if start > 0 or self.lines == 0 else pos + 1
        return f"line {line:,}, column {col:,} (character {self.offset + pos:,})"

    def fail(self, what: str, pos: int | None = None) -> TraceFormatError:
        p = self.pos if pos is None else pos
        return TraceFormatError(f"{self.path}: {what} at {self.where(p)}")

    def expect(self, char: str, what: str) -> None:
        c = self.skip_ws()
        if c != char:
            if c == "":
                raise self.truncated(what)
            raise self.fail(f"expected {what}, found {c!r}")
        self.pos += 1

    def truncated(self, inside: str) -> TraceFormatError:
        return TraceFormatError(
            f"{self.path}: the file ends early, inside {inside}, at {self.where(len(self.text))}: "
            "it is truncated (a trace still being written, or an interrupted copy)"
        )

    def value(self, inside: str) -> Any:
        """Decode the JSON value that starts here (reading more as needed)."""
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as e:
                if not self.eof and e.pos >= len(self.text) - _TAIL_CHARS and self.more():
                    continue  # the value may go on in the next chunk
                if self.eof and e.pos >= len(self.text.rstrip()) - _STRING_CHARS:
                    raise self.truncated(inside) from None
                raise self.fail(f"garbled JSON ({e.msg})", e.pos) from None
            # A number or word that ends at the buffer's end may go on in the next chunk.
            if end >= len(self.text) and not isinstance(obj, (dict, list, str)) and self.more():
                continue
            self.pos = end
            return obj


def read_trace(
    path: str | Path, keep: Callable[[dict[str, Any]], T | None]
) -> tuple[dict[str, Any], list[T]]:
    """The trace's metadata (its top-level fields other than the events) and ``keep(e)`` of
    each event for which it is not None, in file order.  Raises :class:`TraceFormatError`."""
    p = Path(path)
    try:
        fh = _open_binary(p)
    except OSError as e:
        raise BadValue(f"cannot read {p}: {e.strerror or e}") from None
    with fh:
        buf = _Buffer(p, fh)
        meta: dict[str, Any] = {}
        kept: list[T] = []
        first = buf.skip_ws()
        if first == "":
            raise TraceFormatError(f"{p}: the file is empty: not a trace")
        if first == "[":
            kept.extend(_events(buf, keep))
        elif first == "{":
            buf.pos += 1
            found = False
            fields = 0
            while True:
                c = buf.skip_ws()
                if c == "}":
                    buf.pos += 1
                    break
                if c == "":
                    raise buf.truncated("the trace's top-level object")
                if fields:
                    if c != ",":
                        raise buf.fail("expected ',' or '}' between the trace's fields, "
                                       f"found {c!r}")
                    buf.pos += 1
                    c = buf.skip_ws()
                if c != '"':
                    raise buf.fail("expected a field name of the trace's top-level object")
                key = buf.value("a field name")
                buf.expect(":", "':' after a field name")
                if key == "traceEvents":
                    if buf.skip_ws() != "[":
                        raise buf.fail("expected the array of traceEvents")
                    kept.extend(_events(buf, keep))
                    found = True
                else:
                    buf.skip_ws()
                    meta[str(key)] = buf.value(f"the field {key!r}")
                fields += 1
            if not found:
                raise TraceFormatError(
                    f"{p}: a JSON object without traceEvents: not a Chrome trace "
                    "(torch.profiler's export_chrome_trace or tensorboard_trace_handler writes one)"
                )
        else:
            raise buf.fail(f"not a Chrome trace: it starts with {first!r}, not '{{' or '['")
        if buf.skip_ws() != "":
            raise buf.fail("unexpected text after the end of the trace")
    return meta, kept


def _events(buf: _Buffer, keep: Callable[[dict[str, Any]], T | None]) -> Iterator[T]:
    """The kept events of the array that starts at ``buf.pos`` (its ``[``).

    The loop runs on local copies of the buffer's text and position (they are written
    back before the buffer reads on or reports an error): it runs once per event, and a
    trace has hundreds of thousands of them."""
    decode = _DECODER.raw_decode
    sep = _SEP.match
    buf.pos += 1
    index = 0
    text, pos = buf.text, buf.pos
    while True:
        m = sep(text, pos)
        assert m is not None  # the pattern matches the empty string
        end = m.end()
        if end < len(text) and text[end] == "{" and (index == 0) == (m.group(1) is None):
            try:
                event, pos = decode(text, end)
            except json.JSONDecodeError:
                buf.pos = end
                event = buf.value(f"event {index + 1:,}")
                text, pos = buf.text, buf.pos
            else:
                if pos >= len(text):  # may go on in the next chunk: decode it again
                    buf.pos = end
                    event = buf.value(f"event {index + 1:,}")
                    text, pos = buf.text, buf.pos
            index += 1
            out = keep(event)
            if out is not None:
                yield out
            continue
        # Anything else (the end of the chunk, of the array, a separator to check) is
        # rare: the buffer's own methods take it, with their errors.
        buf.pos = pos
        c = buf.skip_ws()
        if c == "]":
            buf.pos += 1
            return
        if c == "":
            raise buf.truncated(f"the array of events (after event {index:,})")
        if index:
            if c != ",":
                raise buf.fail(f"expected ',' or ']' after event {index:,}, found {c!r}")
            buf.pos += 1
            c = buf.skip_ws()
            if c == "]":  # a trailing comma, as some writers leave
                buf.pos += 1
                return
            if c == "":
                raise buf.truncated(f"the array of events (after event {index:,})")
        if c != "{":
            raise buf.fail(f"expected event {index + 1:,} (a JSON object), found {c!r}")
        start = buf.pos
        event = buf.value(f"event {index + 1:,}")
        if not isinstance(event, dict):
            raise buf.fail(f"event {index + 1:,} is not a JSON object", start)
        index += 1
        out = keep(event)
        if out is not None:
            yield out
        text, pos = buf.text, buf.pos
