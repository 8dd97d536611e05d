"""The database refuses the raw-SQL attacks 0001 let through, and sums that overflow.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

What 0001 refuses (UPDATE, DELETE, an unbalanced header, a posting joining a booked entry)
held for well-behaved callers. Tried from a plain shell, three holes remained; this revision
closes them, whoever connects:

- **REPLACE.** On SQLite `INSERT OR REPLACE` resolves a key conflict by deleting the old row,
  and delete triggers fire on that only with `recursive_triggers` (a per-connection setting):
  a posting could be moved out of a booked entry, a narration rewritten. BEFORE INSERT
  triggers now refuse any insert whose key (txn id, idempotency key, reversed entry; posting
  id; account id or name; commodity name) already exists, so REPLACE never gets to delete.
- **Postings without a header.** The posting's deferred foreign key to its header is what
  makes a posting without a header uncommittable, and SQLite checks foreign keys only on
  connections that turned them on (the sqlite3 shell does not). A posting inserted on a
  connection with foreign keys off is now refused by a trigger that reads the connection's
  own setting (`pragma_foreign_keys`); a reversal must name an existing entry.
- **The PostgreSQL race.** Session B inserts a posting for entry 9300 while session A has
  inserted 9300's postings and header but not committed: B cannot see the header, so the
  "sealed" check passes, and A's balance check never saw B's posting. A deferred constraint
  trigger now re-checks, at commit, the balance of every entry a transaction added postings
  to, unless that transaction inserted the entry's header itself (then the header's own check
  saw every posting: none can follow a header in the same transaction).
- **Overflow.** SQLite's SUM over BIGINT nano-units overflows past about 9.2e9 units; the
  balance check now sums whole units and remainders apart (exact, no overflow).

Accounts and commodities are append-only too (an account renamed under its postings would
move them). The definitions are this revision's own; the messages match 0001's.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

F = 1_000_000_000  # nano-units per unit; see ledger/numbers.py

APPEND_ONLY = "tradeledger: the ledger is append-only; book a reversal instead"
REPLACE = "tradeledger: the ledger is append-only; a row with this key already exists (no REPLACE)"
FOREIGN_KEYS_OFF = ("tradeledger: postings need PRAGMA foreign_keys = ON, so that none can exist "
                    "without its transaction")
NO_ORIGINAL = "tradeledger: a reversal must name an existing entry"
UNBALANCED = "tradeledger: transaction does not balance (or has no postings, or mixed times)"
NO_HEADER = "tradeledger: a posting needs its transaction header"

# Balanced when sum(weight) = F * sum(weight / F) + sum(weight % F) = 0, computed without ever
# forming the whole sum: the remainders must sum to a multiple of F that cancels the units.
_UNBALANCED_CONDITION = f"""
    NOT EXISTS (SELECT 1 FROM posting WHERE txn_id = NEW.id)
    OR EXISTS (SELECT 1 FROM posting WHERE txn_id = NEW.id GROUP BY weight_currency
               HAVING SUM(weight % {F}) % {F} <> 0
                   OR SUM(weight / {F}) + SUM(weight % {F}) / {F} <> 0)
    OR EXISTS (SELECT 1 FROM posting WHERE txn_id = NEW.id AND ts <> NEW.ts)
"""

_TXN_KEY_TAKEN = """EXISTS (SELECT 1 FROM txn WHERE id = NEW.id)
    OR (NEW.idem_key IS NOT NULL AND EXISTS (SELECT 1 FROM txn WHERE idem_key = NEW.idem_key))
    OR (NEW.reverses_id IS NOT NULL AND EXISTS (SELECT 1 FROM txn WHERE reverses_id = NEW.reverses_id))"""

SQLITE = [
    "DROP TRIGGER txn_balanced",
    f"""CREATE TRIGGER txn_balanced AFTER INSERT ON txn WHEN {_UNBALANCED_CONDITION}
        BEGIN SELECT RAISE(ABORT, '{UNBALANCED}'); END""",
    f"""CREATE TRIGGER txn_no_replace BEFORE INSERT ON txn WHEN {_TXN_KEY_TAKEN}
        BEGIN SELECT RAISE(ABORT, '{REPLACE}'); END""",
    f"""CREATE TRIGGER txn_reverses_existing BEFORE INSERT ON txn
        WHEN NEW.reverses_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM txn WHERE id = NEW.reverses_id)
        BEGIN SELECT RAISE(ABORT, '{NO_ORIGINAL}'); END""",
    f"""CREATE TRIGGER posting_no_replace BEFORE INSERT ON posting
        WHEN EXISTS (SELECT 1 FROM posting WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, '{REPLACE}'); END""",
    f"""CREATE TRIGGER posting_foreign_keys_on BEFORE INSERT ON posting
        WHEN (SELECT foreign_keys FROM pragma_foreign_keys) = 0
        BEGIN SELECT RAISE(ABORT, '{FOREIGN_KEYS_OFF}'); END""",
    f"""CREATE TRIGGER account_no_replace BEFORE INSERT ON account
        WHEN EXISTS (SELECT 1 FROM account WHERE id = NEW.id OR name = NEW.name)
        BEGIN SELECT RAISE(ABORT, '{REPLACE}'); END""",
    f"CREATE TRIGGER account_no_update BEFORE UPDATE ON account BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END",
    f"CREATE TRIGGER account_no_delete BEFORE DELETE ON account BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END",
    f"""CREATE TRIGGER commodity_no_replace BEFORE INSERT ON commodity
        WHEN EXISTS (SELECT 1 FROM commodity WHERE name = NEW.name)
        BEGIN SELECT RAISE(ABORT, '{REPLACE}'); END""",
    f"CREATE TRIGGER commodity_no_update BEFORE UPDATE ON commodity BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END",
    f"CREATE TRIGGER commodity_no_delete BEFORE DELETE ON commodity BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END",
]

POSTGRES = [
    f"""CREATE FUNCTION tl_posting_balanced_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE header_xmin xid;
        BEGIN
          SELECT xmin INTO header_xmin FROM txn WHERE id = NEW.txn_id;
          IF NOT FOUND THEN RAISE EXCEPTION '{NO_HEADER}'; END IF;
          IF header_xmin = pg_current_xact_id()::xid THEN RETURN NULL; END IF;
          IF EXISTS (SELECT 1 FROM posting WHERE txn_id = NEW.txn_id
                     GROUP BY weight_currency HAVING SUM(weight) <> 0)
             OR EXISTS (SELECT 1 FROM posting p JOIN txn t ON t.id = p.txn_id
                        WHERE p.txn_id = NEW.txn_id AND p.ts <> t.ts) THEN
            RAISE EXCEPTION '{UNBALANCED}';
          END IF;
          RETURN NULL;
        END $$""",
    """CREATE CONSTRAINT TRIGGER posting_balanced_at_commit AFTER INSERT ON posting
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tl_posting_balanced_at_commit()""",
    f"""CREATE FUNCTION tl_txn_reverses_existing() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.reverses_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM txn WHERE id = NEW.reverses_id) THEN
            RAISE EXCEPTION '{NO_ORIGINAL}';
          END IF;
          RETURN NEW;
        END $$""",
    "CREATE TRIGGER txn_reverses_existing BEFORE INSERT ON txn FOR EACH ROW EXECUTE FUNCTION tl_txn_reverses_existing()",
    "CREATE TRIGGER account_append_only BEFORE UPDATE OR DELETE ON account FOR EACH ROW EXECUTE FUNCTION tl_refuse()",
    "CREATE TRIGGER account_no_truncate BEFORE TRUNCATE ON account FOR EACH STATEMENT EXECUTE FUNCTION tl_refuse()",
    "CREATE TRIGGER commodity_append_only BEFORE UPDATE OR DELETE ON commodity FOR EACH ROW EXECUTE FUNCTION tl_refuse()",
    "CREATE TRIGGER commodity_no_truncate BEFORE TRUNCATE ON commodity FOR EACH STATEMENT EXECUTE FUNCTION tl_refuse()",
]


def upgrade() -> None:
    for statement in SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
