"""Property-based fuzzing of the command line (Hypothesis), as the server is fuzzed (schemathesis).

Generated configs, overrides, data files, texts, output paths and `--device` values go through
`ragtune validate`, `ragtune run`, `ragtune predict` and `ragtune eval`, and every case must keep the
contract of the error catalogue: exit 0 or 2 (argparse's usage errors are 2 too), never a traceback, and no input
file touched; a failed command leaves an existing output file as it was and writes no new one.

The cases are seeded (``derandomize=True``): CI runs the same ones each time, `FUZZ_CASES` of them
in all (see :data:`CASES`). Set ``RAGTUNE_FUZZ_SCALE=10`` to run ten times as many, and
``RAGTUNE_FUZZ_SEED=N`` for another, still reproducible, set; ``RAGTUNE_FUZZ_NO_SHRINK=1`` reports a
failing case as found instead of shrinking it (each shrink step may train a model).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import conftest
from ragtune.cli import main

SCALE = float(os.environ.get("RAGTUNE_FUZZ_SCALE", "1"))
SEED = int(os.environ.get("RAGTUNE_FUZZ_SEED", "0"))
NO_SHRINK = bool(os.environ.get("RAGTUNE_FUZZ_NO_SHRINK"))  # report a failing case as found (shrinking retrains)
CASES = {"validate": int(160 * SCALE), "run": int(60 * SCALE), "predict": int(60 * SCALE), "eval": int(40 * SCALE)}
FUZZ_CASES = sum(CASES.values())

LABELS = ["politics", "economy", "entertainment"]


def _settings(n: int):
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([] if NO_SHRINK else [Phase.shrink])
    return settings(max_examples=n, derandomize=SEED == 0, database=None, deadline=None, print_blob=True, phases=phases,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])


def _seeded(fn):
    return seed(SEED)(fn) if SEED else fn


# ------------------------------------------------------------------------------------------------
# what the cases are made of
# ------------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
NASTY_TEXT = st.one_of(
    TEXT,
    st.sampled_from(["", " ", "\t\n", "\x00", "\ud800", "\udcff", "选举 政府 今天", "a,b", '"', "\r\n", "=1+2",
                     "x" * 3000, "null", "~", "[1, 2]", "{a: 1}", "&a [*a]", "1e309", "-0", "NaN"]),
)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                   st.floats(allow_nan=True, allow_infinity=True), NASTY_TEXT)
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)

BASE = {
    "task": "classification",
    "data": {"train": "train.csv"},
    "tokenizer": {"vocab_size": 100, "min_frequency": 1},
    "model": conftest.TINY_MODEL,
    "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 1, "batch_size": 8, "steps_per_epoch": 2, "seed": 0},
}

# Keys of the base config and others of the schema, a few misspelt; validate sets any of them to anything.
KEYS = ["task", "name", "data.train", "data.test", "data.validation", "data.text_column", "data.label_column",
        "data.validation_fraction", "data.test_fraction", "data.max_rows", "tokenizer.vocab_size",
        "tokenizer.kind", "tokenizer.min_frequency", "tokenizer.path", "model.heads", "model.layers",
        "model.d_model", "model.head_dim", "model.ffn_dim", "model.max_length", "model.dropout", "model.backbone",
        "model.name_or_path", "model.lora.enabled", "train.lr", "train.epochs", "train.batch_size",
        "train.optimizer", "train.seed", "train.scheduler", "train.steps_per_epoch", "train.threads",
        "train.grad_accum_steps", "train.clip_grad_norm", "eval.batch_size", "serve.max_wait_ms",
        "serve.max_batch_size", "retrieval.corpus", "decode.strategy", "tune.space", "trian.lr", "model.layrs",
        "data", "train", "model", "", ".", "a..b", "data.train.x"]
# run: only what keeps a case cheap (no model size, epoch or step count is fuzzed there)
RUN_KEYS = ["task", "name", "data.text_column", "data.label_column", "data.validation_fraction",
            "data.test_fraction", "tokenizer.vocab_size", "tokenizer.min_frequency", "train.lr", "train.seed",
            "train.optimizer", "train.batch_size", "train.clip_grad_norm", "model.dropout", "trian.lr"]
# --device of predict and eval: what this machine has, what it may lack, and names that are no device
DEVICES = ["--device=cpu", "--device=auto", "--device=cuda", "--device=cuda:3", "--device=gpu", "--device=", "--device=mps"]
CHEAP_VALUE = st.one_of(SCALAR, st.sampled_from([0, 1, 2, -1, 0.5, 1.5, "text", "label", "regression",
                                                 "sgd", "adamw", 10**9]))


def _override(key_strategy, value_strategy):
    def render(pair):
        key, value = pair
        text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
        text = text.removesuffix("...").strip() if "\n" not in text.removesuffix("...").strip() else json.dumps(value)
        return f"{key}={text}"
    return st.tuples(key_strategy, value_strategy).map(render)


OVERRIDES = st.lists(st.one_of(_override(st.sampled_from(KEYS), VALUE), NASTY_TEXT.map(lambda t: f"{t}={t}"),
                               NASTY_TEXT.filter(lambda t: "=" not in t and not t.startswith("-"))), max_size=3)
RUN_OVERRIDES = st.one_of(st.just([]), st.lists(_override(st.sampled_from(RUN_KEYS), CHEAP_VALUE), max_size=2))


@st.composite
def config_text(draw):
    """A config file's text: the base with some keys set to anything, or YAML/bytes that are not a config."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "raw", "yaml-value", "bytes"]))
    if kind == "raw":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "yaml-value":
        return yaml.safe_dump(draw(VALUE), allow_unicode=True).encode("utf-8", "surrogatepass")
    cfg = json.loads(json.dumps(BASE))
    for key, value in draw(st.lists(st.tuples(st.sampled_from(KEYS), VALUE), max_size=4)):
        node, parts = cfg, [p for p in key.split(".")]
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part), dict) or part not in node else {}
        node[parts[-1]] = value
    try:
        return yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass")
    except yaml.YAMLError:
        return b"task: classification\n"


@st.composite
def table_bytes(draw, labelled: bool = True):
    """A data file's bytes, CSV or JSONL: a good file (a third of the cases), a good file with one
    cell replaced by anything, or a wild one (any header, cells, encoding, cut anywhere)."""
    fmt = draw(st.sampled_from(["csv", "csv", "jsonl"]))
    quality = draw(st.sampled_from(["good", "one-bad-cell", "wild"]))
    cols = ["text", "label"] if labelled else ["text"]
    n = draw(st.integers(12, 24))
    if quality == "wild":
        cols = draw(st.sampled_from([["text", "label"], ["label", "text"], ["text"], ["text", "text"],
                                     ["text", "label", "extra"], [], ["Text", "Label"]]))
        n = draw(st.integers(0, 24))
    rows = [{c: (LABELS[i % 3] if c == "label" else f"{LABELS[i % 3]} news {i} 选举") for c in cols} for i in range(n)]
    if quality == "one-bad-cell" and rows:
        row, col = draw(st.integers(0, n - 1)), draw(st.sampled_from(cols))
        rows[row][col] = draw(st.one_of(NASTY_TEXT, SCALAR, st.sampled_from(["1", "1.0", ""])))
    elif quality == "wild":
        for r in rows:
            for c in r:
                if draw(st.booleans()):
                    r[c] = draw(st.one_of(NASTY_TEXT, SCALAR))
    if fmt == "jsonl":
        lines = [json.dumps(r, ensure_ascii=draw(st.booleans()), default=str) for r in rows]
        if quality == "wild" and draw(st.booleans()) and lines:
            lines[draw(st.integers(0, len(lines) - 1))] = draw(st.sampled_from(["{", "[]", "1", "null", "[" * 50]))
        return "jsonl", ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    import csv

    out = io.StringIO()
    writer = csv.writer(out)
    if cols:
        writer.writerow(cols)
    for r in rows:
        writer.writerow(["" if v is None else v for v in r.values()])
    text = out.getvalue()
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"])) if quality == "wild" else "utf-8"
    try:
        data = text.encode(encoding, "surrogatepass" if encoding.startswith("utf-8") else "strict")
    except UnicodeError:
        data = text.encode("utf-8", "surrogatepass")
    if quality == "wild" and draw(st.booleans()) and data:  # cut it somewhere
        data = data[:draw(st.integers(0, len(data)))]
    return "csv", data


# ------------------------------------------------------------------------------------------------
# the contract
# ------------------------------------------------------------------------------------------------

def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)  # command -> exit codes
MESSAGES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)  # command -> first error words


def check_contract(argv: list[str], inputs: Path, capsys) -> int:
    """Run ``argv``; assert exit 0/2, no traceback and ``inputs`` unchanged; return the exit code."""
    before = digest(inputs)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a usage error
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err[-2000:])
    assert "Traceback" not in err, (argv, err[-3000:])
    if code == 2:
        assert "error:" in err, (argv, err[-2000:])
        line = next(x for x in err.splitlines() if "error:" in x)
        MESSAGES[argv[0]][re.sub(r"\S*ragtune-fuzz-\S*", "PATH", line)[:100]] += 1
    OUTCOMES[argv[0]][code] += 1
    assert digest(inputs) == before, f"{argv} changed its input files"
    return code


@contextlib.contextmanager
def case_folder():
    folder = Path(tempfile.mkdtemp(prefix="ragtune-fuzz-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# the cases
# ------------------------------------------------------------------------------------------------

@_seeded
@_settings(CASES["validate"])
@given(config=config_text(), overrides=OVERRIDES, show=st.booleans())
def test_validate_fuzz(config, overrides, show, capsys):
    with case_folder() as folder:
        inputs = folder / "in"
        inputs.mkdir()
        (inputs / "cfg.yaml").write_bytes(config)
        pd_rows = conftest._news_rows(12)
        pd_rows.to_csv(inputs / "train.csv", index=False)
        argv = ["validate", str(inputs / "cfg.yaml"), *overrides] + (["--show"] if show else [])
        check_contract(argv, inputs, capsys)


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    """One finished tiny classification run that predict and eval cases use (never written to)."""
    folder = tmp_path_factory.mktemp("fuzz_run")
    conftest._news_rows(60).to_csv(folder / "train.csv", index=False)
    (folder / "cfg.yaml").write_text(yaml.safe_dump({**BASE, "train": {**BASE["train"], "steps_per_epoch": None}}),
                                     encoding="utf-8")
    assert main(["run", str(folder / "cfg.yaml"), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


@_seeded
@_settings(CASES["run"])
@given(data=table_bytes(), overrides=RUN_OVERRIDES, out_kind=st.sampled_from(["new", "new", "file", "nonempty", "under-file"]))
def test_run_fuzz(data, overrides, out_kind, capsys):
    with case_folder() as folder:
        fmt, blob = data
        inputs = folder / "in"
        inputs.mkdir()
        (inputs / f"train.{fmt}").write_bytes(blob)
        cfg = {**BASE, "data": {"train": f"train.{fmt}"}}
        (inputs / "cfg.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
        out = folder / "out"
        if out_kind == "file":
            out.write_text("mine")
        elif out_kind == "nonempty":
            out.mkdir()
            (out / "mine.txt").write_text("mine")
        elif out_kind == "under-file":
            (folder / "f").write_text("mine")
            out = folder / "f" / "run"
        before = digest(folder) if out_kind != "new" else None
        code = check_contract(["run", str(inputs / "cfg.yaml"), *overrides, "--out", str(out), "--quiet"], inputs, capsys)
        if out_kind != "new":
            assert code == 2 and digest(folder) == before
        elif code == 0:
            assert (out / "model.safetensors").exists() and (out / "metrics.json").exists()


@_seeded
@_settings(CASES["predict"])
@given(texts=st.lists(NASTY_TEXT, max_size=4), data=st.one_of(st.none(), table_bytes(labelled=False)),
       output=st.sampled_from([None, "new.csv", "existing.csv", "folder", "under-file/x.csv", "n" * 300 + ".csv"]),
       flags=st.lists(st.sampled_from(["--overwrite", "--strategy=beam", "--text-column=label", "--text-column=nope",
                                       "--engine=onnx", "--max-new-tokens=0", "--top-k=-1", "--beam-size=3",
                                       *DEVICES]),
                      max_size=2, unique=True))
def test_predict_fuzz(fuzz_run, texts, data, output, flags, capsys):
    with case_folder() as folder:
        inputs = folder / "in"
        inputs.mkdir()
        argv = ["predict", str(fuzz_run), *texts, *flags]
        if data is not None:
            fmt, blob = data
            (inputs / f"rows.{fmt}").write_bytes(blob)
            argv += ["--input", str(inputs / f"rows.{fmt}")]
        target = None
        if output is not None:
            target = folder / output
            if output == "existing.csv":
                target.write_text("keep me\n")
            elif output == "folder":
                target.mkdir()
            elif output.startswith("under-file"):
                (folder / "under-file").write_text("a file")
            argv += ["--output", str(target)]
        run_before = digest(fuzz_run)
        outside_before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        code = check_contract(argv, inputs, capsys)
        assert digest(fuzz_run) == run_before
        if code == 2:  # a failed predict leaves what was there and writes nothing new
            assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == outside_before
        if code == 0 and target is not None and data is not None:
            assert target.is_file()
        assert not [p for p in folder.rglob("*.tmp*")], "a temporary file was left behind"


@_seeded
@_settings(CASES["eval"])
@given(data=table_bytes(), device=st.one_of(st.just([]), st.sampled_from(DEVICES).map(lambda flag: [flag])))
def test_eval_fuzz(fuzz_run, data, device, capsys):
    with case_folder() as folder:
        fmt, blob = data
        inputs = folder / "in"
        inputs.mkdir()
        (inputs / f"rows.{fmt}").write_bytes(blob)
        argv = ["eval", str(fuzz_run), "--data", str(inputs / f"rows.{fmt}"), *device]
        run_before = digest(fuzz_run)
        check_contract(argv, inputs, capsys)
        assert digest(fuzz_run) == run_before


def test_the_cases_reach_both_outcomes():
    """The fuzzing is worth its time only if cases get past the checks as well as into them: each
    command that ran here had cases that succeeded (exit 0) and cases refused (exit 2)."""
    if not OUTCOMES:
        pytest.skip("no fuzz case ran in this session")
    print({cmd: dict(codes) for cmd, codes in OUTCOMES.items()})
    for cmd, msgs in MESSAGES.items():
        print(cmd, msgs.most_common(8))
    for cmd, codes in OUTCOMES.items():
        assert codes[0] > 0 and codes[2] > 0, (cmd, dict(codes), MESSAGES[cmd].most_common(5))
