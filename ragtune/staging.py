"""Replace an output folder only once its new contents are complete: write beside it, swap at the end.

Every command that may replace a folder (``run --overwrite``, ``index --overwrite`` and ``--add``,
``train-reranker --overwrite``) writes the new contents into a hidden sibling, ``.OUT.tmp-PID``,
and only when that finished does :func:`swap_into_place` move the old folder aside
(``.OUT.old-PID``), the new one in, and delete the old one. A failure at any point before the swap
(a data error, Ctrl-C, a full disk) removes the sibling and leaves ``OUT`` exactly as it was.

The commands hold ``OUT.lock`` (:mod:`ragtune.locks`) while they write, so a ``.OUT.tmp-*`` or
``.OUT.old-*`` sibling found when :func:`staged` starts is what a killed process left behind: it is
removed, with a warning.

:func:`inputs_inside` is the other half of the promise that ``--overwrite`` loses nothing: a
command lists its input files, and one that lies inside the folder to be replaced is refused before
anything is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def inputs_inside(folder: Path, inputs: Iterable[tuple[str, str | Path]]) -> list[tuple[str, str]]:
    """The ``(what, path)`` of ``inputs`` that are ``folder`` itself or lie inside it (resolved, so
    ``./data/../run/x.csv`` and symbolic links count)."""
    root = Path(folder).resolve()
    found = []
    for what, path in inputs:
        if path is None or path == "":
            continue
        resolved = Path(path).resolve()
        if resolved == root or root in resolved.parents:
            found.append((what, str(path)))
    return found


def _leftovers(out_dir: Path) -> list[Path]:
    return sorted(p for pattern in (f".{out_dir.name}.tmp-*", f".{out_dir.name}.old-*")
                  for p in out_dir.parent.glob(pattern) if p.is_dir())


@contextlib.contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    """A new hidden sibling folder to write ``out_dir``'s new contents into: swapped into place
    (:func:`swap_into_place`) when the block finishes, removed when it fails. Call it while holding
    ``out_dir``'s lock (leftover siblings of a killed process are cleared first)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for old in _leftovers(out_dir):
        log.warning("removing %s, left by an interrupted earlier write of %s", old, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        yield tmp
        swap_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Move the finished ``tmp`` folder to ``out_dir``, replacing what is there only at the very end."""
    old = None
    if out_dir.is_dir():
        if any(out_dir.iterdir()):
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            out_dir.rename(old)
        else:
            out_dir.rmdir()
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
