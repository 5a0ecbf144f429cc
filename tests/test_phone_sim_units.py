"""The virtual phone's pure parts: adbd's message codec, the adb key check, the shell's
command line, and state kept across a restart."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from device_agents.android.phone_sim import VirtualPhone, wire
from device_agents.android.phone_sim.adb_host import AdbServer
from device_agents.android.phone_sim.adbkey import AdbPublicKey, BadKey
from device_agents.android.phone_sim.termux import install_termux

MESSAGES = [wire.Message(wire.A_CNXN, wire.A_VERSION, wire.MAX_PAYLOAD, b"host::features=shell_v2\0"),
            wire.Message(wire.A_OPEN, 7, 0, b"shell,v2,raw:getprop\0"),
            wire.Message(wire.A_OKAY, 1, 7),
            wire.Message(wire.A_WRTE, 7, 1, bytes(range(256)) * 40)]


def test_messages_parse_whole_byte_by_byte_and_with_trailing_data() -> None:
    data = b"".join(m.encode() for m in MESSAGES)
    assert wire.Parser().feed(data) == MESSAGES
    parser = wire.Parser()
    got = [msg for i in range(len(data)) for msg in parser.feed(data[i:i + 1])]
    assert got == MESSAGES
    parser = wire.Parser()
    assert parser.feed(data + MESSAGES[0].encode()[:10]) == MESSAGES
    assert parser.feed(MESSAGES[0].encode()[10:]) == [MESSAGES[0]]


def test_header_fields_follow_protocol_txt() -> None:
    raw = wire.Message(wire.A_WRTE, 1, 2, b"ab").encode()
    command, arg0, arg1, length, checksum, magic = wire.HEADER.unpack(raw[:24])
    assert raw[:4] == b"WRTE" and (arg0, arg1, length) == (1, 2, 2)
    assert checksum == ord("a") + ord("b") and magic == command ^ 0xFFFFFFFF


def test_bad_magic_unknown_command_and_oversized_payload_are_refused() -> None:
    good = bytearray(wire.Message(wire.A_OKAY, 1, 2).encode())
    good[20] ^= 0xFF
    with pytest.raises(wire.RemoteProtocolError, match="bad magic"):
        wire.Parser().feed(bytes(good))
    bogus = wire.HEADER.pack(0x41414141, 0, 0, 0, 0, 0x41414141 ^ 0xFFFFFFFF)
    with pytest.raises(wire.RemoteProtocolError, match="unknown command"):
        wire.Parser().feed(bogus)
    big = wire.HEADER.pack(wire.A_WRTE, 1, 1, wire.MAX_PAYLOAD + 1, 0, wire.A_WRTE ^ 0xFFFFFFFF)
    with pytest.raises(wire.RemoteProtocolError, match="over the"):
        wire.Parser().feed(big)


@pytest.mark.skipif(shutil.which("adb") is None or shutil.which("openssl") is None,
                    reason="needs adb (for a real adb key) and openssl (to sign as adb does)")
def test_token_signed_with_the_adb_servers_key_verifies(tmp_path: Path) -> None:
    with AdbServer() as adb:
        key_file = adb.home / ".android" / "adbkey"
        key = AdbPublicKey.parse((adb.home / ".android" / "adbkey.pub").read_bytes() + b"\0")
        token = os.urandom(wire.TOKEN_SIZE)
        (tmp_path / "token").write_bytes(token)
        # RSA_sign(NID_sha1, token): the token stands for a SHA-1 digest.
        signature = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", str(key_file), "-pkeyopt",
                                    "digest:sha1", "-in", str(tmp_path / "token")],
                                   capture_output=True, check=True).stdout
    assert key.verify(token, signature)
    assert not key.verify(os.urandom(wire.TOKEN_SIZE), signature)
    assert len(key.fingerprint().split(":")) == 16
    with pytest.raises(BadKey):
        AdbPublicKey.parse(b"not-base64!! user@host\0")


async def test_command_lines_as_mksh_splits_them(tmp_path: Path) -> None:
    phone = VirtualPhone(data_dir=tmp_path, loopback="127.0.0.9")
    run = phone.shell.run
    assert (await run("false && echo no; echo $?")).stdout == b"1\n"
    assert (await run("false || echo yes")).stdout == b"yes\n"
    assert (await run("getprop | grep -c serialno")).stdout == b"2\n"  # ro.serialno, ro.boot.serialno
    r = await run("nosuch 2>&1 | grep -c inaccessible")
    assert (r.stdout, r.stderr) == (b"1\n", b"")
    r = await run("echo out >/dev/null; nosuch 2>/dev/null; echo $?")
    assert (r.stdout, r.stderr) == (b"127\n", b"")
    r = await run("echo 'two words' \"and more\"")
    assert r.stdout == b"two words and more\n"
    r = await run("echo 'unterminated")
    assert r.exit == 1 and b"syntax error" in r.stderr


async def test_state_survives_a_restart_on_the_same_folder(tmp_path: Path) -> None:
    first = VirtualPhone(data_dir=tmp_path, loopback="127.0.0.9")
    install_termux(first)
    first.receive_sms("+33612345678", "kept")
    first.receive_call("+33611111111")
    assert (await first.shell.run("pm grant com.termux.api android.permission.READ_SMS")).exit == 0
    assert (await first.shell.run("settings put global sms_outgoing_check_max_count 10")).exit == 0
    await first.stop()
    second = VirtualPhone(data_dir=tmp_path, loopback="127.0.0.9")
    install_termux(second)
    assert [r["body"] for r in second.state.sms] == ["kept"]
    assert len(second.state.calls) == 1
    assert "android.permission.READ_SMS" in second.state.packages["com.termux.api"].granted
    assert second.sms.max_count == 10  # read at boot
    second.receive_sms("+33612345678", "next")
    assert [r["_id"] for r in second.state.sms] == [1, 2]  # ids keep counting
