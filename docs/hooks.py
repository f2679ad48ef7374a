"""MkDocs hooks of ragtune's docs site (`mkdocs.yml`: `hooks: [docs/hooks.py]`).

* The repository's `README.md`, `BENCHMARKS.md` and `README.zh-CN.md` become the pages `index.md`,
  `benchmarks.md` and `zh-CN.md` (one copy of each text: the repository's).
* Links are written as they work on GitHub, relative to the file. A link to another page of the site is
  made relative to the page (MkDocs then checks the page and its anchor). A link to a repository file
  outside `docs/` (`../../configs/demo.yaml`, `benchmarks/results/x.json` in BENCHMARKS.md) is checked: a
  missing file fails the build. With `repo_url` set in mkdocs.yml it becomes a link to the file there;
  without, the path in code (a built site holds only the docs).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
FROM_REPOSITORY = {"index.md": "README.md", "benchmarks.md": "BENCHMARKS.md", "zh-CN.md": "README.zh-CN.md"}  # site page: repository file
PAGE_OF = {source: page for page, source in FROM_REPOSITORY.items()}
LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(([^)\s]+)\)")
SHOWN = "repository/"  # where a picture of the repository outside docs/ is copied on the site
FENCE = re.compile(r"(^[ \t]*(?:```|~~~).*$)", re.M)


def on_files(files, config):
    for page, source in FROM_REPOSITORY.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / source)))
    pages = [*FROM_REPOSITORY.values(), *(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))]
    pictures = set()
    for source in pages:
        for picture, _, target in LINK.findall((ROOT / source).read_text(encoding="utf-8")):
            path = posixpath.normpath(posixpath.join(posixpath.dirname(source), target.partition("#")[0]))
            if picture and not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not path.startswith(("docs/", "../")) \
                    and (ROOT / path).is_file():
                pictures.add(path)
    for path in sorted(pictures):
        files.append(File.generated(config, SHOWN + path, abs_src_path=str(ROOT / path)))
    return files


def on_page_markdown(markdown, page, config, files):
    src = page.file.src_uri
    repo_src = FROM_REPOSITORY.get(src, "docs/" + src)  # the page's own file in the repository
    repo_url = (config.get("repo_url") or "").rstrip("/")
    out, inside = [], False
    for piece in FENCE.split(markdown):
        if FENCE.fullmatch(piece):
            inside = not inside
        elif not inside:
            piece = LINK.sub(lambda m: _rewrite(m, src, repo_src, repo_url), piece)
        out.append(piece)
    return "".join(out)


def _rewrite(m: re.Match, src: str, repo_src: str, repo_url: str) -> str:
    picture, label, target = m.groups()
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
        return m.group(0)  # a URL, or an anchor of this page
    path, sep, anchor = target.partition("#")
    repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(repo_src), path))
    if repo_path == ".." or repo_path.startswith("../"):
        raise PluginError(f"{repo_src}: the link {target!r} leaves the repository")
    site = PAGE_OF.get(repo_path) or (repo_path[len("docs/"):] if repo_path.startswith("docs/") else None)
    if site is not None:  # a page of the site
        return f"{picture}[{label}]({posixpath.relpath(site, posixpath.dirname(src) or '.')}{sep}{anchor})"
    if not (ROOT / repo_path).exists():
        raise PluginError(f"{repo_src}: the link {target!r} names {repo_path}, which is not in the repository")
    if picture:  # copied onto the site by on_files
        return f"![{label}]({posixpath.relpath(SHOWN + repo_path, posixpath.dirname(src) or '.')})"
    if repo_url:
        return f"[{label}]({repo_url}/blob/main/{repo_path}{sep}{anchor})"
    return label if label.strip("`") == repo_path else f"{label} (`{repo_path}`)"
