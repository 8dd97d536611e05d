"""The layering is enforced: `lint-imports` checks the import-linter contracts in pyproject.toml
(ledger and broker import nothing of engine, reports, commands or the CLI; the engine imports
neither reports nor the CLI; nothing imports cli.py; the ledger's tables are reached only through
`Ledger`, never by importing ledger/schema.py nor by SQL text outside ledger/)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)] if lint.exists() else ["lint-imports"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "5 kept" in result.stdout


LEDGER_TABLES = ("txn", "posting", "account", "commodity", "price", "balance", "lot_balance")


def test_no_sql_text_on_the_ledgers_tables_outside_ledger():
    """The import contract cannot see SQL in a string: `FROM commodity` in engine/ would read the
    ledger's tables behind the Ledger's back."""
    pattern = re.compile(r"\b(FROM|JOIN|INTO|UPDATE)\s+(" + "|".join(LEDGER_TABLES) + r")\b")
    found = []
    for folder in ("engine", "reports", "commands", "broker"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line) and ("\"" in line or "'" in line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == [], "\n".join(found)
