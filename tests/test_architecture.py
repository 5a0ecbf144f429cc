"""The rooms and their doors (docs/architecture.md) hold, and the check that
guards them fails when a door is broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())", "--no-cache"]


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # The tree's own packages first on the path, ahead of any installed copy.
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run(LINT, cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / "pyproject.toml", tree)
    for package in ("bridge", "device_agents"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_every_import_rule_is_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_broken_rule_fails_the_check_and_names_it(tmp_path):
    tree = copy_tree(tmp_path)
    # An agent reaching into the bridge, and an AT core doing I/O: both forbidden.
    protocol = tree / "device_agents" / "protocol.py"
    protocol.write_text(protocol.read_text() + "\nfrom bridge import config as _config  # noqa\n")
    at = tree / "device_agents" / "modem" / "at.py"
    at.write_text(at.read_text() + "\nimport asyncio as _asyncio  # noqa\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "device agents never import the bridge BROKEN" in result.stdout
    assert "AT and PDU cores import no I/O BROKEN" in result.stdout
    assert "device_agents.protocol -> bridge.config" in result.stdout
