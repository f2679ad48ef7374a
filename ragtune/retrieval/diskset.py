"""Disk-backed set and dict (SQLite) for indexing corpora larger than memory.

::

    with SeenStore(work_dir / "seen.sqlite") as store:
        maker = PassageMaker(128, 32, seen_texts=store.texts, taken_ids=store.ids, explicit_sha=store.explicit)

Duplicate removal has to remember every passage text (its sha1) and document id it has seen: about
200 bytes per passage in Python sets and dicts, 200 MB per million passages. :class:`SeenStore`
keeps them in a SQLite file instead (Python's ``sqlite3``; page cache :data:`CACHE_KIB`), so memory
stays bounded whatever the corpus size. The file is scratch space: journaling and fsync are off,
and the caller deletes it when done.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: SQLite page cache per connection, in KiB (``PRAGMA cache_size``).
CACHE_KIB = 16 * 1024


class DiskTable:
    """A set or mapping in one SQLite table: ``x in t``, ``t.add(x)`` (set), ``t[k] = v``, ``t[k]``,
    ``t.get(k)`` (mapping), ``len(t)``. Keys are ``bytes`` or ``str``; values ``str``."""

    def __init__(self, db: sqlite3.Connection, table: str):
        self._db, self._table = db, table
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} (k PRIMARY KEY, v) WITHOUT ROWID")
        self._get = f"SELECT v FROM {table} WHERE k = ?"
        self._set = f"INSERT OR REPLACE INTO {table} (k, v) VALUES (?, ?)"

    def __contains__(self, key) -> bool:
        return self._db.execute(self._get, (key,)).fetchone() is not None

    def add(self, key) -> None:
        self._db.execute(self._set, (key, None))

    def get(self, key, default=None):
        row = self._db.execute(self._get, (key,)).fetchone()
        return default if row is None else row[0]

    def __getitem__(self, key):
        row = self._db.execute(self._get, (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return row[0]

    def __setitem__(self, key, value) -> None:
        self._db.execute(self._set, (key, value))

    def __len__(self) -> int:
        return self._db.execute(f"SELECT COUNT(*) FROM {self._table}").fetchone()[0]


class SeenStore:
    """The three stores a :class:`~ragtune.retrieval.corpus.PassageMaker` needs, in one SQLite file.

    ``texts`` (passage sha1 digests), ``ids`` (doc id → origin), ``explicit`` (explicit doc id →
    text sha1). Use as a context manager (closes the connection) or call :meth:`close`.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", f"cache_size = -{CACHE_KIB}",
                       "temp_store = FILE"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("BEGIN")  # one transaction: no commit per insert
        self.texts = DiskTable(self._db, "texts")
        self.ids = DiskTable(self._db, "ids")
        self.explicit = DiskTable(self._db, "explicit")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SeenStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
