"""RAG training (retrieval.train_query_encoder): the task loss trains the query encoder and the reader."""

import json

import torch
import yaml
from tiny_hf import save_tiny_encoder

from ragtune.cli import main


def _rag_setup(tmp_path, tiny_reader_folder, qa_tokenizer, squad):
    (tmp_path / "squad.json").write_text(json.dumps(squad), encoding="utf-8")
    encoder = save_tiny_encoder(tmp_path / "encoder", seed=0, tokenizer=qa_tokenizer)
    cfg = {
        "task": "qa",
        "data": {"train": "squad.json", "validation_fraction": 0.2, "test_fraction": 0.2},
        "model": {"backbone": "hf", "name_or_path": str(tiny_reader_folder), "max_length": 48, "doc_stride": 8},
        "retrieval": {"corpus": ["squad.json"], "kind": "dense", "encoder": str(encoder), "top_k": 3,
                      "train_query_encoder": True, "temperature": 0.1, "refresh_every_epochs": 1,
                      "chunk_tokens": 16, "chunk_overlap": 4},
        "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 3, "batch_size": 8, "seed": 0},
        "eval": {"batch_size": 16},
    }
    path = tmp_path / "rag.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_rag_loss_gives_the_query_encoder_gradients(tmp_path, tiny_reader_folder, qa_tokenizer, people_squad):
    """One batch of the marginal loss: reader and query encoder both get gradients through p(z|x) p(y|x,z)."""
    from ragtune.tasks import load_config
    from ragtune.tasks.qa.data import prepare_qa_data
    from ragtune.models.reader import load_reader
    from ragtune.retrieval.corpus import text_sha1
    from ragtune.retrieval.dense import load_encoder
    from ragtune.retrieval.index import build_index, load_index
    from ragtune.train.rag import answer_rows, encode_passages, rag_batch_loss

    cfg = load_config(_rag_setup(tmp_path, tiny_reader_folder, qa_tokenizer, people_squad))
    data = prepare_qa_data(cfg)
    build_index(cfg.retrieval.corpus, tmp_path / "index", kind="dense", encoder=cfg.retrieval.encoder,
                chunk_tokens=16, chunk_overlap=4, progress=False)
    index = load_index(tmp_path / "index")
    reader, tokenizer = load_reader(cfg.model.name_or_path)
    encoder = load_encoder(cfg.retrieval.encoder)
    embeddings = encode_passages(encoder, [p["text"] for p in index.passages])
    records = data.train[:6]
    gold = answer_rows(records, index.passages, text_sha1)
    assert all(gold), gold  # every short paragraph holds its answer in some passage
    encoder.train(), reader.train()
    loss, tokens = rag_batch_loss(reader, tokenizer, encoder, embeddings, index.passages, records, gold, top_k=3,
                                  temperature=0.1, gold_passage=True, max_length=48, doc_stride=8)
    assert torch.isfinite(loss) and loss.item() > 0 and tokens > 0
    loss.backward()
    encoder_grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    reader_grads = [p.grad for p in reader.parameters() if p.grad is not None]
    assert encoder_grads and any(g.abs().sum() > 0 for g in encoder_grads)  # retrieval scores get gradients
    assert reader_grads and any(g.abs().sum() > 0 for g in reader_grads)
    # without the gold passage, and with top_k 1 over a passage that holds no answer, nothing is learnt
    loss, _ = rag_batch_loss(reader, tokenizer, encoder, embeddings, index.passages, records, [[] for _ in records],
                             top_k=1, temperature=0.1, gold_passage=False, max_length=48, doc_stride=8)
    assert torch.isfinite(loss)


def test_rag_run_trains_saves_and_answers_the_same_after_reload(tmp_path, tiny_reader_folder, qa_tokenizer,
                                                               people_squad, capsys):
    from ragtune.tasks.qa.predictor import QAPredictor

    path = _rag_setup(tmp_path, tiny_reader_folder, qa_tokenizer, people_squad)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["answer_selection"] == "rag" and (out / "query_encoder").is_dir()
    assert (out / "passage_embeddings.npy").exists()
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert "refreshed every 1 epochs" in (out / "run.log").read_text()
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert {"exact_match", "f1", "recall@1", "reader_f1"} <= set(test)
    # the trained encoder moved away from the index's original one
    from ragtune.retrieval.dense import load_encoder

    before = load_encoder(str(tmp_path / "encoder" / "st")).encode(["who lives in paris ?"])
    after = load_encoder(str(out / "query_encoder")).encode(["who lives in paris ?"])
    assert not torch.allclose(torch.tensor(before), torch.tensor(after), atol=1e-4)
    questions = ["who lives in paris ?", "who owns a red car ?"]
    first = QAPredictor.from_run_dir(out).answer(questions)
    capsys.readouterr()
    assert main(["predict", str(out), *questions]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["answer"] for line in lines] == [r["answer"] for r in first]
    assert all(len(line["passages"]) == 3 for line in lines)
