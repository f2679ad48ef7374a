"""Data from the Hugging Face Hub: ``data.train: hf://owner/name[:config][@split]``.

``data.train``, ``data.validation`` and ``data.test`` may name a dataset instead of a file::

    data:
      train: hf://SetFit/bbc-news@train          # owner/name, split train (the default split)
      test: hf://SetFit/bbc-news@test
      text_column: text
      label_column: label_text

``datasets.load_dataset(name, config, split=split)`` reads it (``pip install 'ragtune[data]'``), from
the datasets cache when it is there, so a dataset loaded once works offline (``HF_DATASETS_OFFLINE=1``
reads only the cache). ``name`` may also be a local folder of data files, as for ``load_dataset``. The
rows are written once to a content-named file in the cache (ragtune/data/inline.py; question
answering as SQuAD JSON, from the Hub's ``squad`` layout) and the run reads that file: the column
mapping (``data.text_column`` ...) is the same as for files, and the run's ``inputs.json`` records the
file and its sha256; the log names the dataset it came from.
"""

from __future__ import annotations

import logging
from typing import Any

from ragtune.config import HUB_PREFIX, parse_hub_spec
from ragtune.data.inline import materialise
from ragtune.errors import RagtuneError

log = logging.getLogger("ragtune")


def is_hub(value: Any) -> bool:
    """Whether ``value`` names a Hub dataset (``hf://...``)."""
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def parse(value: str, key: str) -> tuple[str, str | None, str]:
    """``hf://owner/name[:config][@split]`` → ``(name, config or None, split)`` (``ragtune.config.parse_hub_spec``:
    ``ragtune validate`` checks the same syntax)."""
    return parse_hub_spec(value, key)


def load_rows(value: str, key: str):
    """The ``datasets.Dataset`` that ``value`` names (one split)."""
    name, config, split = parse(value, key)
    try:
        import datasets
    except ImportError:
        raise RagtuneError(f"{key}: {value} needs the package datasets: pip install 'ragtune[data]' "
                           "(or pip install datasets)") from None
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # not found, offline without a cached copy, an unknown split or config
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RagtuneError(f"{key}: cannot load the dataset {value} ({type(exc).__name__}: {reason}). Check the id, "
                           "the config after ':' and the split after '@'; offline, only datasets already in the "
                           "datasets cache load (or give a local file instead)") from None


def resolve(value: str, key: str, task: str) -> str:
    """The path of the file holding the rows of the Hub dataset ``value`` for a run of ``task``."""
    rows = load_rows(value, key)
    path = materialise(rows, key, task)
    log.info("%s: %s (%d rows) read from %s", key, value, len(rows), path)
    return path
