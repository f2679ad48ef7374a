"""Corpus files → documents → passages: every format, chunking, ids, duplicates, errors."""

import hashlib
import json

import pytest

from ragtune.errors import RagtuneError
from ragtune.retrieval.corpus import (
    Document,
    chunk_text,
    list_corpus_files,
    make_passages,
    read_documents,
)


def _docs(path):
    return list(read_documents(path))


def _pdf(path, pages):
    """Write a minimal valid PDF with one line of Helvetica text per page."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                       f"/Contents {5 + 2 * i} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)
    return path


def test_every_plain_format(small_corpus):
    files = list_corpus_files([small_corpus])
    assert [f.name for f in files] == ["cats.txt", "facts.jsonl", "guide.md", "kg.tsv", "notes.csv"]  # sorted
    docs = {d.id: d for f in files for d in _docs(f)}
    assert set(docs) == {"cats", "guide", "tea", "facts:2", "kg:1", "kg:2", "n1"}
    assert docs["cats"].text.startswith("Cats sleep") and docs["cats"].source == str(small_corpus / "cats.txt")
    assert docs["tea"].title == "Tea" and docs["tea"].explicit_id and "绿茶" in docs["tea"].text
    assert docs["facts:2"].title is None and not docs["facts:2"].explicit_id
    assert docs["n1"].title == "Rust" and docs["n1"].text == "Iron rusts when exposed to water and oxygen."
    # knowledge-graph triples: one short factual passage each, underscores of the relation as spaces
    assert docs["kg:1"].text == "Paris capital of France." and docs["kg:2"].text == "Berlin capital of Germany."
    assert docs["guide"].text.startswith("# Baking\n\nKnead")


def test_squad_paragraphs_are_documents(squad_file):
    docs = _docs(squad_file)
    assert [d.id for d in docs] == ["Mount_Etna#p0", "Mount_Etna#p1", "Great_Wall#p0", "Great_Wall#p1"]
    assert docs[0].title == "Mount_Etna" and docs[0].text.startswith("Mount Etna is an active volcano")
    context = json.loads(squad_file.read_text(encoding="utf-8"))["data"][1]["paragraphs"][0]["context"]
    assert docs[2].sha1 == hashlib.sha1(context.encode("utf-8")).hexdigest()


def test_pdf_pages_are_joined(tmp_path):
    path = _pdf(tmp_path / "manual.pdf", ["Volcanoes erupt lava.", "Glaciers carve valleys."])
    (doc,) = _docs(path)
    assert doc.id == "manual" and doc.source == str(path)
    assert "Volcanoes erupt lava." in doc.text and "Glaciers carve valleys." in doc.text
    assert doc.text.index("Volcanoes") < doc.text.index("Glaciers")


def test_bad_files_name_file_line_and_columns(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"bad.jsonl: line 3 has no 'text' field \(its keys: 'body'\)"):
        _docs(bad)
    bad.write_text('{"text": "ok"}\n{not json\n', encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"bad.jsonl: line 2 is not valid JSON"):
        _docs(bad)
    table = tmp_path / "table.csv"
    table.write_text("body,label\nhello,x\n", encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"table.csv: missing column 'text'.*the file has columns: 'body', 'label'"):
        _docs(table)
    other = tmp_path / "other.json"
    other.write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(RagtuneError, match="SQuAD format"):
        _docs(other)
    docx = tmp_path / "x.docx"
    docx.write_text("x", encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"cannot index a file with extension '\.docx'; supported extensions"):
        list_corpus_files([docx])
    with pytest.raises(RagtuneError, match="corpus path not found"):
        list_corpus_files([tmp_path / "missing.txt"])
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(RagtuneError, match=r"latin.txt: not UTF-8 text: byte offset 3 \(line 1\)"):
        _docs(latin)


def test_chunks_overlap_and_keep_the_original_spacing():
    text = "w0 w1  w2\nw3 w4 w5 w6 w7 w8 w9"
    chunks = chunk_text(text, chunk_tokens=4, chunk_overlap=2)
    assert chunks == ["w0 w1  w2\nw3", "w2\nw3 w4 w5", "w4 w5 w6 w7", "w6 w7 w8 w9"]
    assert chunk_text(text, chunk_tokens=4, chunk_overlap=0) == ["w0 w1  w2\nw3", "w4 w5 w6 w7", "w8 w9"]
    assert chunk_text("  short text.  ", 128, 32) == ["short text."]  # one slice, punctuation is a token
    assert chunk_text(" \n ", 4, 1) == []
    with pytest.raises(RagtuneError, match="chunk_overlap must be at least 0 and smaller than chunk_tokens=4"):
        chunk_text(text, chunk_tokens=4, chunk_overlap=4)


def test_chinese_is_chunked_per_character():
    text = "北京大学是中国著名的高等学府。It has 40,000 students."
    chunks = chunk_text(text, chunk_tokens=5, chunk_overlap=1)
    assert chunks[0] == "北京大学是" and chunks[1] == "是中国著名"
    assert chunks[-1].endswith("students.")
    assert "".join(c[1:] if i else c for i, c in enumerate(chunk_text("一二三四五六七", 3, 1))) == "一二三四五六七"


def test_passage_ids_doc_ids_and_duplicates():
    docs = [
        Document(id="a", text="one two three four five six", source="a.txt"),
        Document(id="b", text="one two three four five six", source="b.txt"),  # same text: all passages duplicate
        Document(id="c", text="x y z x y z x y z", source="c.txt", title="C"),  # repeats itself inside
        Document(id="e", text="   ", source="e.txt"),  # empty
    ]
    result = make_passages(docs, chunk_tokens=3, chunk_overlap=0)
    assert [p.id for p in result.passages] == ["a::0", "a::1", "c::0"]
    assert [p.doc_id for p in result.passages] == ["a", "a", "c"]
    assert result.passages[0].text == "one two three" and result.passages[2].title == "C"
    assert result.duplicates_removed == 4  # b::0, b::1, c::1, c::2
    assert result.empty_documents == 1 and result.documents == 2  # b (all duplicates) is not indexed
    assert result.passages[2].doc_sha1 == hashlib.sha1("x y z x y z x y z".encode()).hexdigest()


def test_id_collisions():
    derived = [Document(id="README", text="first", source="a/README.md"),
               Document(id="README", text="second", source="b/README.md")]
    assert [p.doc_id for p in make_passages(derived).passages] == ["README", "README~2"]
    same = [Document(id="d1", text="alpha", source="x.jsonl", origin="x.jsonl line 1", explicit_id=True),
            Document(id="d1", text="alpha", source="x.jsonl", origin="x.jsonl line 2", explicit_id=True)]
    result = make_passages(same)
    assert len(result.passages) == 1 and result.duplicate_documents == 1
    clash = [same[0], Document(id="d1", text="beta", source="y.jsonl", origin="y.jsonl line 7", explicit_id=True)]
    with pytest.raises(RagtuneError, match=r"document id 'd1' is used twice: x.jsonl line 1 and y.jsonl line 7"):
        make_passages(clash)
