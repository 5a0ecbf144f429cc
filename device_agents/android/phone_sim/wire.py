"""adbd's transport messages, without I/O: bytes in, :class:`Message` out.

Source: AOSP packages/modules/adb, ``protocol.txt`` and ``adb.h``. Every
message is a 24-byte little-endian header — ``command``, ``arg0``, ``arg1``,
``data_length``, ``data_crc32`` (really a byte sum; ignored from protocol
version ``A_VERSION_SKIP_CHECKSUM`` on), ``magic = command ^ 0xffffffff`` —
followed by ``data_length`` bytes of payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# adb.h: the commands are their ASCII names read as little-endian u32.
A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_AUTH = 0x48545541
A_STLS = 0x534C5453
COMMANDS = {A_SYNC: "SYNC", A_CNXN: "CNXN", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE",
            A_WRTE: "WRTE", A_AUTH: "AUTH", A_STLS: "STLS"}

# adb.h: protocol versions and payload sizes.
A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001
MAX_PAYLOAD_V1 = 4 * 1024
MAX_PAYLOAD = 1024 * 1024

# adb_auth.h: AUTH arg0 types; a token is 20 random bytes (TOKEN_SIZE).
ADB_AUTH_TOKEN = 1
ADB_AUTH_SIGNATURE = 2
ADB_AUTH_RSAPUBLICKEY = 3
TOKEN_SIZE = 20

HEADER = struct.Struct("<6I")


class RemoteProtocolError(Exception):
    """The host sent something adbd would drop the connection for."""


@dataclass(frozen=True, slots=True)
class Message:
    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    @property
    def name(self) -> str:
        return COMMANDS.get(self.command, f"0x{self.command:08x}")

    def encode(self) -> bytes:
        checksum = sum(self.data) & 0xFFFFFFFF
        return HEADER.pack(self.command, self.arg0 & 0xFFFFFFFF, self.arg1 & 0xFFFFFFFF,
                           len(self.data), checksum, self.command ^ 0xFFFFFFFF) + self.data


class Parser:
    """Feed bytes as they come; take whole messages out.

    ``max_payload`` is the security limit on one message's data (adbd drops
    the connection on a larger one: ``adb.cpp`` checks ``data_length`` against
    the transport's max payload)."""

    def __init__(self, *, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= HEADER.size:
            command, arg0, arg1, length, _checksum, magic = HEADER.unpack_from(self._buf)
            if magic != command ^ 0xFFFFFFFF:
                raise RemoteProtocolError(f"bad magic 0x{magic:08x} for command 0x{command:08x}")
            if command not in COMMANDS:
                raise RemoteProtocolError(f"unknown command 0x{command:08x}")
            if length > self.max_payload:
                raise RemoteProtocolError(f"payload of {length} bytes over the {self.max_payload} limit")
            if len(self._buf) < HEADER.size + length:
                break
            data = bytes(self._buf[HEADER.size:HEADER.size + length])
            del self._buf[:HEADER.size + length]
            out.append(Message(command, arg0, arg1, data))
        return out
