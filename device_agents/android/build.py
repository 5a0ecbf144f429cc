"""Build the agent's self-contained archive (a zipapp, stdlib only).

The phone has Termux's Python and nothing else, so the archive carries the
device protocol, the journal, the runtime (with the caps it keeps and the GSM 7
part count they need), this package and the pure-Python
``websockets`` package (its optional C speedups are left out: websockets
falls back to Python without them). The archive is byte-for-byte the same
for the same sources, so that a replug, which pushes it again, does not
restart an agent that is already running the same code.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

SHEBANG = b"#!/data/data/com.termux/files/usr/bin/python\n"
ENTRY = b"import sys\nfrom device_agents.android.agent import main\nsys.exit(main())\n"
AGENT_MODULES = ("__init__.py", "protocol.py", "journal.py", "runtime.py", "pacing.py", "tasks.py", "pairing.py",
                 "common.py", "modem/__init__.py", "modem/gsm7.py")  # gsm7: the runtime counts SMS parts
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _python_files(root: Path, *, skip: tuple[str, ...] = ()) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or any(rel.parts[0] == s for s in skip):
            continue
        files.append(path)
    return files


def archive_bytes() -> bytes:
    import websockets

    agents = Path(__file__).resolve().parent.parent  # device_agents/
    ws_root = Path(websockets.__file__).resolve().parent
    entries: list[tuple[str, bytes]] = [("__main__.py", ENTRY)]
    for name in AGENT_MODULES:
        entries.append((f"device_agents/{name}", (agents / name).read_bytes()))
    # The Wi-Fi agent only: not the USB routes' helper, not the virtual phone.
    for path in _python_files(agents / "android", skip=("phone_sim", "helper.py", "build.py")):
        entries.append((f"device_agents/android/{path.relative_to(agents / 'android').as_posix()}",
                        path.read_bytes()))
    for path in _python_files(ws_root, skip=("trio",)):
        entries.append((f"websockets/{path.relative_to(ws_root).as_posix()}", path.read_bytes()))
    buf = io.BytesIO()
    buf.write(SHEBANG)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def build_archive(dest: str | os.PathLike[str]) -> Path:
    """Write the archive to ``dest`` (only if it changed) and return its path."""
    dest = Path(dest)
    data = archive_bytes()
    if not dest.exists() or dest.read_bytes() != data:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        os.replace(tmp, dest)
    return dest


if __name__ == "__main__":
    import sys
    print(build_archive(sys.argv[1] if len(sys.argv) > 1 else "simbridge-agent.pyz"))
