"""Retrieval: index a corpus (BM25, dense or hybrid) and search it; one module per stage.

::

    from ragtune.retrieval import build_index, load_index, evaluate_retrieval

    build_index(["data/squad/dev-v1.1.json"], "indexes/squad", kind="hybrid", encoder="minilm")
    index = load_index("indexes/squad")
    index.search("Which NFL team won Super Bowl 50?", k=5)      # [Hit(id, doc_id, score, text, source, title)]
    evaluate_retrieval(index, "data/squad/dev-v1.1.json")       # recall@1/5/10/20, mrr@10, ndcg@10

    train_reranker(index, "data/squad/train.json", "rerankers/squad")   # a cross-encoder, trained here
    reranked = RerankedIndex(index, load_reranker("rerankers/squad"), candidates=20)
    reranked.search("Which NFL team won Super Bowl 50?", k=5)   # 20 candidates rescored, best 5 kept

The stages:

* :mod:`~ragtune.retrieval.corpus` — corpus files (txt, md, jsonl, csv/tsv incl. knowledge-graph
  triples, SQuAD json, pdf) → documents → overlapping passages, duplicates removed;
* :mod:`~ragtune.retrieval.bm25` — BM25 with bm25s (jieba for Chinese, stemming for English);
* :mod:`~ragtune.retrieval.dense` — sentence-transformers embeddings (memory-mapped) and FAISS
  (``flat``, ``hnsw``, ``ivfpq``);
* :mod:`~ragtune.retrieval.fusion` — reciprocal rank fusion (hybrid);
* :mod:`~ragtune.retrieval.index` — the index folder: build, add, load, search;
* :mod:`~ragtune.retrieval.manifest` — ``manifest.json``: settings, versions, checksums;
* :mod:`~ragtune.retrieval.evaluation` — recall/MRR/nDCG on SQuAD questions;
* :mod:`~ragtune.retrieval.rerank` — a cross-encoder reranker trained on SQuAD questions (positives:
  the gold passages; hard negatives: the index's own top non-gold hits) and reranking of hits.

The command line: ``ragtune index``, ``ragtune retrieve``, ``ragtune eval-retrieval``,
``ragtune train-reranker`` (and ``--rerank`` for ``retrieve``/``eval-retrieval``).
Heavy libraries (faiss, sentence-transformers, torch, jieba) are imported only by the stage that
needs them, so a BM25 index never loads torch.
"""

from ragtune.retrieval.evaluation import evaluate_retrieval
from ragtune.retrieval.fusion import reciprocal_rank_fusion
from ragtune.retrieval.index import INDEX_KINDS, Hit, Index, add_to_index, build_index, load_index
from ragtune.retrieval.rerank import RerankedIndex, Reranker, load_reranker, rerank, train_reranker

__all__ = ["INDEX_KINDS", "Hit", "Index", "RerankedIndex", "Reranker", "add_to_index", "build_index",
           "evaluate_retrieval", "load_index", "load_reranker", "reciprocal_rank_fusion", "rerank", "train_reranker"]
