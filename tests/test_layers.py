"""The layering is enforced: `lint-imports` checks the import-linter contracts in pyproject.toml
(ledger and broker import nothing of engine, reports, commands or the CLI; the engine imports
neither reports nor the CLI; nothing imports cli.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)] if lint.exists() else ["lint-imports"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "4 kept" in result.stdout
