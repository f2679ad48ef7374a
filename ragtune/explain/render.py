"""Renderings of an explanation (:func:`ragtune.explain.explain`'s dict): one HTML page, one PNG chart.

* :func:`to_html`: a self-contained page (inline CSS, no scripts, nothing loaded from elsewhere) with
  the prediction, the class scores, the text with each token highlighted (green: pushes towards the
  explained class, red: away from it; the stronger the colour, the larger ``|attribution|`` relative
  to the largest one; the exact value in each token's tooltip), a legend and, for a
  retrieval-augmented run, the passages with their retrieval score, influence and highlighted text.
  Every piece of text from the user, the model or the index is HTML-escaped.
* :func:`to_png`: a horizontal bar chart of the token attributions in reading order (the 40 largest
  by ``|attribution|`` when there are more), drawn with matplotlib's Agg canvas and the CJK font
  fallback of :mod:`ragtune.evaluate.plots`, so Chinese tokens show.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

__all__ = ["to_html", "to_png"]

POSITIVE_RGB = (22, 163, 74)  # green: towards the target
NEGATIVE_RGB = (220, 38, 38)  # red: away from the target
MAX_ALPHA = 0.75  # the strongest highlight; text stays readable on it
PNG_MAX_TOKENS = 40
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _max_abs(explanation: dict) -> float:
    return max((abs(float(t.get("attribution", 0.0))) for t in explanation.get("tokens", [])), default=0.0)


def _colour(attribution: float, scale: float) -> str:
    alpha = 0.0 if scale <= 0 else min(1.0, abs(attribution) / scale) * MAX_ALPHA
    r, g, b = POSITIVE_RGB if attribution >= 0 else NEGATIVE_RGB
    return f"rgba({r},{g},{b},{alpha:.3f})"


def _lang(text: str) -> str:
    return "zh" if _CJK.search(text) else "und"


def _highlight(source: str, tokens: list[dict], scale: float) -> str:
    """``source`` as HTML, each token's characters in a span coloured by its attribution.

    Tokens sharing characters (several tokens of one character) become one span with the sum of their
    scores. Characters no token covers are plain, or greyed out when they are more than whitespace:
    the model did not read them (the input was cut at ``max_length``).
    """
    spans: list[list] = []  # [start, end, attribution, token names]
    for t in sorted(tokens, key=lambda t: (int(t["start"]), int(t["end"]))):
        start, end = max(0, int(t["start"])), min(len(source), int(t["end"]))
        if end <= start:
            continue
        if spans and start < spans[-1][1]:  # overlaps the previous span: merge
            spans[-1][1] = max(spans[-1][1], end)
            spans[-1][2] += float(t["attribution"])
            spans[-1][3].append(str(t["token"]))
            continue
        spans.append([start, end, float(t["attribution"]), [str(t["token"])]])
    parts: list[str] = []

    def gap(chunk: str) -> None:
        if chunk.strip():
            parts.append(f'<span class="unread" title="not read by the model">{_e(chunk)}</span>')
        elif chunk:
            parts.append(_e(chunk))

    cursor = 0
    for start, end, attribution, names in spans:
        gap(source[cursor:start])
        tip = f"{' '.join(names)}: {attribution:+.4f}"
        parts.append(f'<span class="tok" style="background:{_colour(attribution, scale)}" '
                     f'title="{_e(tip)}">{_e(source[start:end])}</span>')
        cursor = end
    gap(source[cursor:])
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK SC","PingFang SC",
"Microsoft YaHei",sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1f2937;line-height:1.5}
h1{font-size:1.4rem;margin-bottom:.3rem} h2{font-size:1.1rem;margin-top:1.8rem}
.meta{color:#4b5563;font-size:.9rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.92rem}
th,td{border-bottom:1px solid #e5e7eb;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f9fafb} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.bar{display:inline-block;height:.7rem;background:#3b82f6;border-radius:2px;vertical-align:middle}
.text{white-space:pre-wrap;font-size:1.1rem;line-height:2;border:1px solid #e5e7eb;border-radius:6px;padding:.8rem}
.passage{white-space:pre-wrap;line-height:1.9}
.tok{border-radius:3px;padding:.1rem 0}
.unread{color:#9ca3af;text-decoration:line-through}
.legend span.box{display:inline-block;width:1.6rem;height:.9rem;border-radius:3px;vertical-align:middle;margin:0 .3rem 0 1rem}
.pos{color:#15803d} .neg{color:#b91c1c}
"""


def _has_classes(e: dict) -> bool:
    """Whether the explanation is of a classifier's class (it has class scores), not a regression output."""
    return e.get("task", "classification" if "scores" in e else "regression") != "regression"


def to_html(explanation: dict) -> str:
    """One self-contained HTML page (UTF-8) showing ``explanation`` (the dict of :func:`~ragtune.explain.explain`)."""
    e = explanation
    scale = _max_abs(e)
    classes = _has_classes(e)
    target = e.get("target")
    tokens = e.get("tokens", [])
    text = str(e.get("text", ""))
    out: list[str] = ['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">']
    if classes:
        heading = f"Prediction: {e.get('label')}"
        towards = f"towards “{target}”"
    else:
        heading = f"Prediction: {float(e.get('value', float('nan'))):.4g}"
        towards = "towards a higher value"
    out += [f"<title>{_e('ragtune explanation – ' + heading)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    out.append(f"<h1>{_e(heading)}</h1>")
    output, baseline = float(e.get("output", 0.0)), float(e.get("baseline_output", 0.0))
    shown_baseline = f"({baseline:.4f})" if baseline < 0 else f"{baseline:.4f}"
    what = f"the logit of “{target}”" if classes else "the model output (standardised)"
    out.append(
        f'<p class="meta">Token attributions by integrated gradients ({_e(e.get("n_steps", "?"))} steps) of '
        f"{_e(what)}. They add up to its change from the baseline: {output:.4f} (input) − {shown_baseline} (baseline) = "
        f"{output - baseline:.4f}, up to the convergence delta {float(e.get('convergence_delta', 0.0)):.2e}. "
        "The baseline is the same input with every token replaced by padding.</p>")

    if classes and isinstance(e.get("scores"), dict):
        out.append("<h2>Class scores</h2>")
        out.append('<table><thead><tr><th>class</th><th>probability</th><th></th></tr></thead><tbody>')
        for label, p in sorted(e["scores"].items(), key=lambda kv: -float(kv[1])):
            marks = [mark for mark, hit in (("predicted", label == e.get("label")), ("explained", label == target)) if hit]
            width = max(0.0, min(1.0, float(p))) * 12
            out.append(f'<tr><td>{_e(label)}{" <em>(" + _e(", ".join(marks)) + ")</em>" if marks else ""}</td>'
                       f'<td class="num">{float(p):.4f}</td>'
                       f'<td><span class="bar" style="width:{width:.2f}rem"></span></td></tr>')
        out.append("</tbody></table>")

    out.append("<h2>Text</h2>")
    text_tokens = [t for t in tokens if t.get("segment") == "text"]
    out.append(f'<div class="text" lang="{_lang(text)}">{_highlight(text, text_tokens, scale)}</div>')
    out.append(
        '<p class="legend meta">'
        f'<span class="box" style="background:{_colour(1.0, 1.0)}"></span>pushes {_e(towards)}'
        f'<span class="box" style="background:{_colour(-1.0, 1.0)}"></span>pushes away'
        '<span class="box" style="background:#fff;border:1px solid #d1d5db"></span>no effect'
        f' — the strongest colour is |attribution| = {scale:.4f}; hover a token for its value.'
        ' <span class="unread">struck through</span>: not read (cut at max_length).</p>')

    passages = e.get("passages")
    if passages is not None:
        out.append("<h2>Retrieved passages</h2>")
        if not passages:
            out.append('<p class="meta">The retriever found no passage for this text; it was read alone.</p>')
        else:
            unit = f"p({target})" if classes else "the prediction"
            out.append(f'<p class="meta">Influence: how much {_e(unit)} drops when the passage is left out '
                       "(positive: the passage supports it).</p>")
            out.append('<table><thead><tr><th>#</th><th>passage</th><th>retrieval score</th><th>influence</th>'
                       "</tr></thead><tbody>")
            for i, p in enumerate(passages):
                own = [t for t in tokens if t.get("segment") == "passage" and t.get("passage") == i]
                p_text = str(p.get("text", ""))
                influence = float(p.get("influence", 0.0))
                cls = "pos" if influence > 0 else "neg" if influence < 0 else ""
                info = f"{p.get('doc_id', '')} · {p.get('id', '')}"
                if p.get("label") is not None:
                    info += f" · label {p['label']}"
                out.append(
                    f'<tr><td class="num">{i + 1}</td><td><div class="meta">{_e(info)}</div>'
                    f'<div class="passage" lang="{_lang(p_text)}">{_highlight(p_text, own, scale)}</div></td>'
                    f'<td class="num">{float(p.get("score", 0.0)):.4f}</td>'
                    f'<td class="num {cls}">{influence:+.4f}</td></tr>')
            out.append("</tbody></table>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _token_text(explanation: dict, token: dict) -> str:
    """What a bar is labelled with: the characters the token covers (its name when it covers none)."""
    if token.get("segment") == "passage":
        passages = explanation.get("passages") or []
        i = token.get("passage")
        source = str(passages[i].get("text", "")) if isinstance(i, int) and 0 <= i < len(passages) else ""
        prefix = f"P{i + 1}: " if isinstance(i, int) else "P: "
    else:
        source, prefix = str(explanation.get("text", "")), ""
    piece = source[int(token.get("start", 0)): int(token.get("end", 0))].strip()
    if piece and str(token.get("token", "")).startswith("##"):
        piece = "##" + piece  # a piece inside a word
    return prefix + (piece or str(token.get("token", "")))


def to_png(explanation: dict, path: str | os.PathLike) -> None:
    """Write a horizontal bar chart of the token attributions of ``explanation`` to ``path`` (PNG).

    Bars in reading order (text, then passages), green for positive, red for negative; when there
    are more than 40 tokens, the 40 with the largest ``|attribution|`` are shown (still in order).
    """
    from ragtune.evaluate.plots import _figure, _short

    e = explanation
    tokens = [t for t in e.get("tokens", []) if t.get("segment") in ("text", "passage")]
    shown = tokens
    if len(tokens) > PNG_MAX_TOKENS:
        top = sorted(range(len(tokens)), key=lambda i: -abs(float(tokens[i]["attribution"])))[:PNG_MAX_TOKENS]
        shown = [tokens[i] for i in sorted(top)]
    values = [float(t["attribution"]) for t in shown]
    names = [_short(_token_text(e, t), 24) for t in shown]
    colours = ["#%02x%02x%02x" % (POSITIVE_RGB if v >= 0 else NEGATIVE_RGB) for v in values]
    if _has_classes(e):
        target = e.get("target")
        p = (e.get("scores") or {}).get(target)
        title = f"Token attributions towards “{_short(target)}”"
        title += f" (p = {float(p):.3f})" if p is not None else ""
        if e.get("label") != target:
            title += f"; predicted “{_short(e.get('label'))}”"
        unit = "attribution (logit)"
    else:
        title = f"Token attributions (predicted value {float(e.get('value', float('nan'))):.4g})"
        unit = "attribution (standardised output)"
    if len(tokens) > len(shown):
        title += f"\n{len(shown)} of {len(tokens)} tokens, largest |attribution|"
    height = min(max(2.5, 0.28 * len(shown) + 1.4), 16.0)
    with _figure(Path(path), (8.0, height)) as (fig, _):
        ax = fig.add_subplot()
        if shown:
            ax.barh(range(len(shown)), values, color=colours, height=0.7)
            ax.set_yticks(range(len(shown)), names, fontsize=9)
            ax.invert_yaxis()  # the first token at the top
        else:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no tokens to show", ha="center", va="center", transform=ax.transAxes)
        ax.axvline(0.0, color="#6b7280", linewidth=0.8)
        ax.set_xlabel(unit)
        ax.set_title(title, fontsize=11)
        ax.grid(True, axis="x", alpha=0.3)
