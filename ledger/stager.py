"""Stagers: the rows of a big JSON-lines import made in processes beside the writer.

A bulk import of a file (`ledger/bulk.py`) spends most of its time in Python making rows (reading
JSON, checking each entry, its fingerprint, binding values), which one process cannot overlap
with SQLite writing them. On SQLite a big import therefore starts stagers: each is
`python -m tradeledger.ledger.stager`, reads the same open file (its descriptor, inherited: the
same file however it is renamed meanwhile), and takes its share of the chunks of entries (the
writer makes every fifth itself, the others go round the stagers: `Stagers.schedule`). For each
it makes the rows exactly as the importing process would (`bulk_rows.Preparer`, the same code),
writes them into an in-memory SQLite database of two tables (`txn`, `posting`, the ledger's
columns) and sends that database's image (`sqlite3.Connection.serialize`) through a pipe. The
writer attaches the image (`deserialize`) and copies its rows with one INSERT ... SELECT per table:
no Python per row in the writer. What needs the ledger (keys already booked, the ids of reversed
originals, labelled lots) stays with the writer: a chunk that holds a reversal, a ref or a labelled
lot comes back as its entries (`Items`), which the writer books itself.

Ids are those the writer would give: `first_id + place - 1` for the entry at `place` (1-based) in
the file; a replay leaves its id unused.

A frame is 8 bytes of length, a pickle of the header (`Staged`, `Items`, `Refused` or `Done`),
and for `Staged` the image's bytes. A stager stops at its first refusal; a stager that dies or
stops sending ends the import with an error, and the writer's transaction rolls back. A writer
that dies leaves its stagers writing into a closed pipe: they end there.
"""

from __future__ import annotations

import gc
import os
import pickle
import queue
import sqlite3
import struct
import subprocess
import sys
import threading
from typing import NamedTuple

from tradeledger.ledger.bulk_rows import POSTING_COLUMNS, TXN_COLUMNS, Importing, Preparer, insert_sqlite
from tradeledger.ledger.model import LedgerError

_LENGTH = struct.Struct("<Q")
INBOX = 4  # chunks a stager may run ahead of the writer (about 2 MB each)


class Setup(NamedTuple):
    """What a stager is told on its standard input."""

    fd: int  # the file, open in the writer and inherited
    name: str  # the file's name, for errors
    directives: tuple[str, ...]  # the caller's own directive lines (EntriesFile)
    accounts: dict  # Preparer's accounts
    booked_at: str
    first_id: int
    chunk: int
    part: int  # this stager's number
    schedule: tuple[int, ...]  # chunk i is made by part schedule[i % len(schedule)]; -1: the writer


class Staged(NamedTuple):
    index: int
    sums: dict
    lots: dict
    size: int  # the image's bytes, which follow


class Items(NamedTuple):
    index: int
    batch: list  # (place, Importing): for the writer to book itself


class Refused(NamedTuple):
    index: int
    message: str


class Done(NamedTuple):
    part: int


# -- the stager -----------------------------------------------------------------------------

def stage(preparer: Preparer, first_id: int, index: int, batch: list) -> tuple[Staged | Items, bytes]:
    """A chunk's rows as an SQLite image, or its entries back when the writer must decide them."""
    checked = [preparer.check(place, item) for place, item in batch]
    for c in checked:
        if c.ready.labelled or c.txn.reverses is not None or c.item.reverses_key is not None \
                or c.item.ref is not None or c.item.reverses_ref is not None:
            return Items(index, batch), b""
    rows = preparer.rows([(c.place, c.txn, c.ready, c.digest, first_id + c.place - 1, None) for c in checked])
    image = sqlite3.connect(":memory:", isolation_level=None)
    try:
        image.execute(f"CREATE TABLE txn ({TXN_COLUMNS})")
        image.execute(f"CREATE TABLE posting ({POSTING_COLUMNS})")
        cursor = image.cursor()
        cursor.execute("BEGIN")
        insert_sqlite(cursor, "txn", TXN_COLUMNS, rows.headers)
        insert_sqlite(cursor, "posting", POSTING_COLUMNS, rows.postings)
        cursor.execute("COMMIT")
        data = image.serialize()
    finally:
        image.close()
    return Staged(index, rows.sums, rows.lots, len(data)), data


def _send(out, header, data: bytes = b"") -> None:
    payload = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LENGTH.pack(len(payload)))
    out.write(payload)
    if data:
        out.write(data)
    out.flush()


def main() -> int:
    # The rows form no cycle; the collector would walk every tuple a chunk keeps alive, at each
    # allocation threshold (what bulk.import_entries turns off in the writer too).
    gc.disable()
    try:
        return _stage_all(pickle.load(sys.stdin.buffer))
    except (BrokenPipeError, EOFError):  # the writer is gone (it failed, or was killed): so is the import
        os._exit(1)  # nothing to flush into a closed pipe


def _stage_all(setup: Setup) -> int:
    from tradeledger.ledger.jsonl import EntriesFile

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing printed by accident can corrupt a frame
    preparer = Preparer(setup.accounts, True, setup.booked_at)
    # A description of its own (its own offset), of the same file the writer has open.
    with open(f"/proc/self/fd/{setup.fd}", encoding="utf-8") as handle:
        source = EntriesFile(handle, setup.name, setup.directives)
        schedule, part = setup.schedule, setup.part
        for index, batch, error in source.chunks(setup.chunk, lambda i: schedule[i % len(schedule)] == part):
            try:
                if error is not None:
                    raise error
                header, data = stage(preparer, setup.first_id, index, batch)
            except LedgerError as exc:
                _send(out, Refused(index, str(exc)))
                return 0
            _send(out, header, data)
    _send(out, Done(setup.part))
    return 0


# -- the writer's side ----------------------------------------------------------------------

class Stagers:
    """The running stagers of one import, and the writer's own share of the chunks, read chunk by
    chunk in the file's order."""

    def __init__(self, fd: int, name: str, directives: tuple[str, ...], accounts: dict, booked_at: str,
                 first_id: int, chunk: int, parts: int, writer_every: int = 0):
        """`parts` stagers; the writer makes every `writer_every`-th chunk itself (0: none), the
        first among them, so that it works while the stagers start."""
        self.schedule = ((-1,) + tuple(i % parts for i in range(writer_every - 1)) if writer_every > 1
                         else tuple(range(parts)))
        self.procs: list[subprocess.Popen] = []
        self.inboxes: list[queue.Queue] = []
        self.stopping = threading.Event()
        self.handle = None
        self.fd, self.name, self.directives, self.chunk = fd, name, directives, chunk
        try:
            for part in range(parts):
                try:
                    proc = subprocess.Popen([sys.executable, "-m", "tradeledger.ledger.stager"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(fd,))
                except OSError as exc:
                    raise LedgerError(f"the import's stagers could not start ({exc}); nothing was imported; "
                                      "TRADELEDGER_STAGERS=0 imports in one process") from None
                self.procs.append(proc)
                try:
                    pickle.dump(Setup(fd, name, directives, accounts, booked_at, first_id, chunk, part,
                                      self.schedule), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    proc.stdin.close()
                except BrokenPipeError:  # it died at once: its first frame, missing, says so
                    pass
        except BaseException:
            self.stop()
            raise
        # Each stager's frames are read as they come, by a thread of their own (reading a pipe lets
        # the writer's thread run): a stager never waits on a full pipe (64 KB, where a chunk's
        # image is about 2 MB) for the writer to finish its chunk, and runs up to INBOX chunks ahead.
        for proc in self.procs:
            inbox: queue.Queue = queue.Queue(INBOX)
            self.inboxes.append(inbox)
            threading.Thread(target=self._receive, args=(proc, inbox), daemon=True,
                             name="tradeledger-stager-reader").start()

    def _receive(self, proc: subprocess.Popen, inbox: queue.Queue) -> None:
        while not self.stopping.is_set():
            try:
                frame = self._read(proc)
            except (LedgerError, OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
                frame = exc if isinstance(exc, LedgerError) else LedgerError(
                    f"the import's stager could not be read ({exc}); nothing was imported")
            while not self.stopping.is_set():
                try:
                    inbox.put(frame, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(frame, LedgerError) or isinstance(frame[0], (Done, Refused)):
                return

    def _next(self, part: int):
        frame = self.inboxes[part].get()
        if isinstance(frame, LedgerError):
            raise frame
        return frame

    def frames(self):
        """(header, image bytes) of each chunk in order: `Staged` from a stager, `Items` from a
        stager or the writer's own share (read here); a refusal is raised as the `LedgerError` it was."""
        from tradeledger.ledger.jsonl import EntriesFile

        schedule = self.schedule
        self.handle = open(f"/proc/self/fd/{self.fd}", encoding="utf-8")  # an offset of its own
        own = EntriesFile(self.handle, self.name, self.directives).chunks(
            self.chunk, lambda i: schedule[i % len(schedule)] < 0)
        index = 0
        while True:
            owner = schedule[index % len(schedule)]
            if owner < 0:
                got = next(own, None)
                if got is None:
                    return  # no chunk here: none later
                _, batch, error = got
                if error is not None:
                    raise error
                yield Items(index, batch), b""
            else:
                header, data = self._next(owner)
                if isinstance(header, Refused):
                    raise LedgerError(header.message)
                if isinstance(header, Done):
                    return  # this stager has no chunk here: none has one later
                if header.index != index:
                    raise LedgerError(f"the import's stager sent chunk {header.index} where {index} was due; "
                                      "nothing was imported")
                yield header, data
            index += 1

    def _read(self, proc: subprocess.Popen):
        head = proc.stdout.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            code = proc.wait()
            raise LedgerError(f"the import's stager stopped (exit code {code}); nothing was imported")
        header = pickle.loads(proc.stdout.read(_LENGTH.unpack(head)[0]))
        data = proc.stdout.read(header.size) if isinstance(header, Staged) else b""
        if isinstance(header, Staged) and len(data) != header.size:
            raise LedgerError("the import's stager stopped mid-chunk; nothing was imported")
        return header, data

    def stop(self) -> None:
        self.stopping.set()
        if self.handle is not None:
            self.handle.close()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None and not stream.closed:
                    stream.close()


if __name__ == "__main__":  # run by name, so that the frames pickle as this module's, not __main__'s
    from tradeledger.ledger.stager import main as _main

    sys.exit(_main())
