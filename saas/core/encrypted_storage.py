"""The format of a stored file encrypted at rest (originals, exports): envelope encryption, streamed.

Each file has its own random 256-bit data key. The key is wrapped with the project's Fernet keys
(LLM_ENCRYPTION_KEYS, saas.core.crypto) and written in the file's header; the content follows in segments of
64 KiB, each sealed with AES-256-GCM (the STREAM construction of age and Tink):

    MAGIC (8 bytes) | length of the wrapped key (2 bytes, big-endian) | wrapped key (a Fernet token, ASCII)
    | segment 0 | segment 1 | ... | last segment            each segment: ciphertext of up to 64 KiB + 16-byte tag

A segment's nonce is its index (8 bytes) and a flag (4 bytes) saying whether it is the last one, so segments
cannot be reordered, dropped or the file cut short at a segment boundary without the tag check failing. Reading
and writing hold two segments in memory, whatever the file's size.

Rotating the keys re-wraps only the data key: the segments are copied as they are (saas/core/storage.py).
Files stored before encryption (no MAGIC) are read as they are while STORAGE_ALLOW_UNENCRYPTED is true (the
default, so an upgrade keeps working) until the rotation command has encrypted them; then set it to false, and
a file swapped for one in clear is refused like any other tampering."""

import base64
import io
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from saas.core import crypto

MAGIC = b"\x89CDENC\x01\n"  # like PNG's: a byte no text starts with, a name, a version, a newline
SEGMENT = 64 * 1024
TAG = 16
PREFIX = len(MAGIC) + 2


class CorruptFile(Exception):
    """The stored bytes are not what was written (damaged, cut short) or no listed key opens them."""


def _nonce(index: int, last: bool) -> bytes:
    return struct.pack(">QI", index, 1 if last else 0)


def _read_exactly(read: Callable[[int], bytes], size: int) -> bytes:
    """Up to `size` bytes; fewer only at the end of the stream (a socket may return short reads)."""
    parts, left = [], size
    while left:
        part = read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def header(token: bytes) -> bytes:
    return MAGIC + struct.pack(">H", len(token)) + token


def new_key() -> tuple[bytes, bytes]:
    """A fresh data key and its wrapped form (the Fernet token that goes in the header)."""
    key = AESGCM.generate_key(bit_length=256)
    return key, crypto.encrypt(base64.urlsafe_b64encode(key).decode()).encode()


def unwrap(token: bytes) -> bytes:
    try:
        return base64.urlsafe_b64decode(crypto.decrypt(token.decode("ascii")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptFile("its key cannot be unwrapped with LLM_ENCRYPTION_KEYS") from exc


def read_header(read: Callable[[int], bytes]) -> tuple[bytes | None, bytes]:
    """(the wrapped key, b"") for an encrypted file; (None, the bytes read) for a file stored in clear."""
    start = _read_exactly(read, len(MAGIC))
    if start != MAGIC:
        return None, start
    length_bytes = _read_exactly(read, 2)
    if len(length_bytes) < 2:
        raise CorruptFile("its header is cut short")
    (length,) = struct.unpack(">H", length_bytes)
    token = _read_exactly(read, length)
    if len(token) < length:
        raise CorruptFile("its header is cut short")
    return token, b""


def plaintext_size(stored_size: int, header_size: int) -> int:
    """The size of the content from the size of the stored file (every segment adds a tag; there is at least
    one, possibly empty)."""
    body = stored_size - header_size
    segments = max(1, -(-body // (SEGMENT + TAG)))
    return max(0, body - TAG * segments)


class _Stream(io.RawIOBase):
    """A readable, non-seekable byte stream produced segment by segment into `_pending`."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def _produce(self) -> None:
        raise NotImplementedError

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while len(self._pending) < len(view) and not self._done:
            self._produce()
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        del self._pending[:count]
        return count

    def readall(self) -> bytes:
        while not self._done:
            self._produce()
        data, self._pending = bytes(self._pending), bytearray()
        return data


class EncryptingStream(_Stream):
    """The stored form of `source` (any object with `read(n)`), read as a stream: header, then segments."""

    def __init__(self, source: BinaryIO | Any, *, key: bytes | None = None, token: bytes | None = None) -> None:
        super().__init__()
        if key is None or token is None:
            key, token = new_key()
        self._read = source.read
        self._aead = AESGCM(key)
        self._index = 0
        self._pending += header(token)
        self._ahead = _read_exactly(self._read, SEGMENT)

    def _produce(self) -> None:
        chunk = self._ahead
        self._ahead = _read_exactly(self._read, SEGMENT) if len(chunk) == SEGMENT else b""
        last = not self._ahead
        self._pending += self._aead.encrypt(_nonce(self._index, last), chunk, MAGIC)
        self._index += 1
        self._done = last


class DecryptingStream(_Stream):
    """The content of a stored file, read from `raw` (its stored bytes). The header and the first segment are
        checked when it is made, so a file that cannot be read fails at open, before anything is sent on; a later
        damaged segment fails the read that reaches it (CorruptFile). A file stored in clear (before encryption at
    rest) is passed through only with `allow_clear`."""

    def __init__(self, raw: BinaryIO | Any, *, allow_clear: bool = False) -> None:
        super().__init__()
        self._raw = raw
        self._read = raw.read
        token, start = read_header(self._read)
        self.encrypted = token is not None
        if token is None:
            if not allow_clear:
                raise CorruptFile("it is not encrypted (a file stored in clear is refused)")
            self._pending += start
        else:
            self._aead = AESGCM(unwrap(token))
            self._index = 0
            self._ahead = _read_exactly(self._read, SEGMENT + TAG)
        self._produce()

    def _produce(self) -> None:
        if not self.encrypted:
            chunk = self._read(SEGMENT)
            self._pending += chunk
            self._done = not chunk
            return
        sealed = self._ahead
        self._ahead = _read_exactly(self._read, SEGMENT + TAG) if len(sealed) == SEGMENT + TAG else b""
        last = not self._ahead
        try:
            self._pending += self._aead.decrypt(_nonce(self._index, last), sealed, MAGIC)
        except InvalidTag as exc:
            raise CorruptFile(f"segment {self._index} does not match what was written") from exc
        self._index += 1
        self._done = last

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class RewrappedStream(_Stream):
    """The same stored file with its data key wrapped under the newest key: a new header, then the segments
    copied byte for byte from `raw` (positioned just after the old header)."""

    def __init__(self, raw: BinaryIO | Any, token: bytes) -> None:
        super().__init__()
        self._read = raw.read
        self._pending += header(crypto.rotate(token.decode("ascii")).encode())

    def _produce(self) -> None:
        chunk = self._read(SEGMENT)
        self._pending += chunk
        self._done = not chunk
