"""The docs hold what they promise: the site builds with no warning (`mkdocs build --strict`: every link and
anchor resolves, every docstring of the API reference parses), the README stays short, every Python snippet of
the READMEs and of the guide's Python sections runs, and every `ragtune ...` command line in the docs parses
with the real command line and names configs that exist."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", ROOT / "README.zh-CN.md"]
DOC_PAGES = sorted((ROOT / "docs").rglob("*.md"))
# pages whose Python snippets stand alone (the others continue a guide's earlier steps or talk to a server)
RUNNABLE = [*READMES, ROOT / "docs" / "guide" / "tour.md", ROOT / "docs" / "reference" / "python.md"]


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.M | re.S)


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    site = tmp_path / "site"
    reference = (site / "reference" / "python" / "index.html").read_text(encoding="utf-8")
    assert "ragtune.api.run" in reference and "from_run_dir" in reference  # the API reference, from docstrings
    config = (site / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    assert "train.report_to" in config and "retrieval.query_encoder_lr" in config
    assert (site / "benchmarks" / "index.html").exists() and (site / "zh-CN" / "index.html").exists()
    assert (site / "repository" / "benchmarks" / "results" / "multi30k_bleu_minutes.png").exists()


def test_the_docs_hook_refuses_a_link_to_a_missing_file(tmp_path):
    """A link to a repository file that is not there fails the build (the hook's check), naming it."""
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    from mkdocs.exceptions import PluginError

    class Page:
        class file:
            src_uri = "guide/tour.md"

    good = hooks.on_page_markdown("[demo](../../ragtune/configs/demo.yaml)", Page, {"repo_url": None}, None)
    assert good == "demo (`ragtune/configs/demo.yaml`)"  # no repo_url: the path, in code
    linked = hooks.on_page_markdown("[demo](../../ragtune/configs/demo.yaml)", Page,
                                    {"repo_url": "https://example.org/ragtune"}, None)
    assert linked == "[demo](https://example.org/ragtune/blob/main/ragtune/configs/demo.yaml)"
    assert hooks.on_page_markdown("[x](../../BENCHMARKS.md#a)", Page, {}, None) == "[x](../benchmarks.md#a)"
    assert hooks.on_page_markdown("```\n[x](nowhere.md)\n```", Page, {}, None) == "```\n[x](nowhere.md)\n```"
    with pytest.raises(PluginError, match="ragtune/configs/nothing.yaml, which is not in the repository"):
        hooks.on_page_markdown("[x](../../ragtune/configs/nothing.yaml)", Page, {}, None)
    with pytest.raises(PluginError, match="leaves the repository"):
        hooks.on_page_markdown("[x](../../../outside.md)", Page, {}, None)


def test_the_readme_is_short_and_links_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    for page in ("docs/guide/tour.md", "docs/reference/config.md", "docs/reference/python.md", "docs/install.md"):
        assert f"]({page}" in readme
    for heading in ("## Start here: two commands", "## Install", "## Quickstart by task", "## Results"):
        assert heading in readme
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_snippets_run(page, tmp_path, monkeypatch):
    """Each ```python block of the page, run in a fresh folder (offline: packaged configs, the demo data)."""
    blocks = code_blocks(page, "python")
    assert blocks, f"{page} has no Python snippet"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGTUNE_CACHE_DIR", str(tmp_path / "cache"))
    for i, code in enumerate(blocks):
        namespace: dict = {"__name__": f"snippet{i}"}
        exec(compile(code, f"{page.name}[python block {i}]", "exec"), namespace)
    assert any((tmp_path / "runs").iterdir())


def command_lines(path: Path):
    """(line, argv) of each `ragtune ...` command of the page's bash blocks (continuations and quotes that
    span lines joined)."""
    for block in code_blocks(path, "bash"):
        lines, pending = block.replace("\\\n", " ").splitlines(), ""
        for line in lines:
            line = (pending + "\n" + line) if pending else line.strip()
            for prefix in (".venv/bin/", "RAGTUNE_API_KEY=s3cret ", "MLFLOW_TRACKING_URI=sqlite:///mlflow.db "):
                line = line.removeprefix(prefix)
            if not line.startswith("ragtune ") or "|" in line or "$(" in line or "&&" in line:
                pending = ""
                continue
            try:
                argv = shlex.split(line, comments=True)[1:]
            except ValueError:  # a quote closes on a later line
                pending = line
                continue
            pending = ""
            if argv and argv[-1] == "&":
                argv = argv[:-1]
            words = []
            for word in argv:  # drop the shell's redirections: `> file`, `2>&1`
                if words and re.fullmatch(r"\d*>>?", words[-1]):
                    words.pop()
                elif not re.fullmatch(r"\d*>&\d", word):
                    words.append(word)
            yield line, words


def test_every_command_line_in_the_docs_parses():
    from ragtune.api import packaged_configs
    from ragtune.cli import parse_args

    names = set(packaged_configs())
    seen = 0
    for page in [*READMES, *DOC_PAGES]:
        for line, argv in command_lines(page):
            seen += 1
            try:
                args = parse_args(argv)
            except SystemExit as stop:  # argparse: unknown command or option
                pytest.fail(f"{page.relative_to(ROOT)}: `{line}` does not parse (exit {stop.code})")
            config = getattr(args, "config", None) or getattr(args, "name", None)
            if args.command in ("run", "validate", "tune", "cp") and isinstance(config, str) \
                    and not config.endswith((".yaml", ".yml")) and "/" not in config:
                assert config in names, f"{page.relative_to(ROOT)}: `{line}` names no packaged config"
    assert seen > 80  # the docs are full of commands; a parsing bug here must not pass silently
