"""The one inference path of ``task: qa``: retrieve passages, read them, answer.

Two readers: **extractive** (an encoder with a span head picks the answer out of a passage, below)
and **generative** (``model.reader: generative``: a causal language model reads the question with
its numbered passages and writes the answer, :mod:`ragtune.tasks.qa.prompts`)::

    qa = QAPredictor.from_run_dir("runs/squad_rag_llm")
    qa.answer(["Which team won Super Bowl 50?"])
    # [{"answer": "Denver Broncos", "score": None, "passage": {...the first cited passage, or None...},
    #   "passages": [...the top_k passages it read, in prompt order...], "citations": [...their ids...],
    #   "abstained": False}]

``ragtune predict`` on a QA run, ``ragtune eval`` and the evaluation inside ``ragtune run`` all go
through :class:`QAPredictor` (and so will the planned HTTP server)::

    from ragtune.tasks.qa.predictor import QAPredictor
    qa = QAPredictor.from_run_dir("runs/squad")
    qa.answer(["Which team won Super Bowl 50?"])
    # [{"answer": "Denver Broncos", "score": 7.9, "passage": {"id": ..., "doc_id": ..., "text": ...,
    #   "score": ...}, "passages": [...the top_k retrieved passages, best first...]}]

**With retrieval** (``top_k`` > 0) each question's ``top_k`` passages come from the run's index;
the reader reads every passage and the answer is the span with the highest ``score - null_score``
over all of them: how much more the reader believes in that span than in "this passage holds no
answer" (the reader learned both from gold paragraphs and retrieved distractors, see
:mod:`ragtune.train.qa`). **Without retrieval** the caller gives each question its passage
(``contexts=``), as in SQuAD's reading-comprehension setting.

A QA run directory holds ``model.json`` (``task: qa``, reader settings, retrieval settings and the
index folder), ``reader/`` (the fine-tuned reader and its tokenizer in Hugging Face format: also
``transformers.pipeline("question-answering", model="RUN_DIR/reader")``) and, when the run built
its own index, ``index/``.

**Devices.** ``from_run_dir(..., device=...)`` loads the reader, the index's dense encoder and, for a
RAG run, the query encoder and ``passage_embeddings`` on ``auto`` (CUDA, else MPS, else the CPU),
``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (:mod:`ragtune.devices`; a device the machine lacks is a
RagtuneError naming ``--device``). The reader's windows go to the reader's device
(:func:`ragtune.models.reader.answer`) and the query vectors to the device of ``passage_embeddings``
(the training loop keeps them on the encoder's device); scores and answers come back to the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ragtune.data.squad import QARecord, answers_by_id
from ragtune.errors import RagtuneError, bad_model_meta, read_model_meta
from ragtune.evaluate.qa_metrics import qa_metrics
from ragtune.evaluate.retrieval_metrics import retrieval_metrics
from ragtune.models.reader import answer, load_reader
from ragtune.retrieval.augment import index_folder
from ragtune.retrieval.corpus import text_sha1
from ragtune.runs import MODEL_META, inference_device

READER_DIR = "reader"
QUERY_ENCODER_DIR = "query_encoder"  # RAG training: the trained query encoder (sentence-transformers)
PASSAGE_EMBEDDINGS = "passage_embeddings.npy"  # RAG training: the passage side the encoder was trained with
RECALL_KS = (1, 5, 10, 20)


class QAPredictor:
    """A fine-tuned reader, its tokenizer, and (optionally) the index it reads from.

    Args:
        reader: the reader model, from :func:`ragtune.models.reader.load_reader`.
        tokenizer: its tokenizer, from the same function.
        meta: ``max_length``, ``doc_stride``, ``max_answer_length``, ``top_k`` (0: no retrieval).
        index: a :class:`ragtune.retrieval.index.Index` (required when ``top_k`` > 0).
        batch_size: reader windows per forward pass.
    """

    def __init__(self, reader, tokenizer, meta: dict, index=None, batch_size: int = 32):
        self.reader = reader  # an ExtractiveReader, or a GenerationPredictor (meta reader: generative)
        self.generative = meta.get("reader") == "generative"
        self.settings = dict(meta.get("qa") or {})  # generative: ragtune.tasks.qa.prompts settings
        self.cutter = None
        if self.generative:
            from ragtune.tasks.qa.prompts import PassageCutter

            self.cutter = PassageCutter(tokenizer.hf, int(self.settings["passage_tokens"]))
        self.tokenizer = tokenizer
        self.meta = meta
        self.index = index
        self.top_k = int(meta.get("top_k", 0))
        self.batch_size = batch_size
        if self.top_k and index is None:
            raise RagtuneError(f"top_k is {self.top_k} but no index was given to read passages from")
        self.query_encoder = None  # RAG: see use_rag
        self.passage_embeddings: torch.Tensor | None = None
        self.temperature = 1.0

    def use_rag(self, query_encoder, passage_embeddings: torch.Tensor, temperature: float) -> None:
        """Retrieve with ``query_encoder`` over ``passage_embeddings`` ``(N, d)`` (rows = index passages) and
        answer by RAG's rule: the span that maximises ``log p(z|x) + log p(span|x,z)``, with
        ``p(z|x) = softmax(cos / temperature)`` over the ``top_k`` passages."""
        if passage_embeddings.shape[0] != len(self.index):
            raise RagtuneError(f"{passage_embeddings.shape[0]} passage embeddings for an index of {len(self.index)} "
                               "passages; they must match row for row")
        self.query_encoder, self.passage_embeddings, self.temperature = query_encoder, passage_embeddings, temperature

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, batch_size: int = 32,
                     device: str | torch.device | None = None) -> QAPredictor:
        """Load a finished QA run (its reader, and its index when it retrieves) on ``device``
        (:func:`ragtune.runs.inference_device`; None: ``auto``)."""
        run_dir = Path(run_dir)
        device = inference_device(device)
        meta_path = run_dir / MODEL_META
        folder = READER_DIR
        if meta_path.exists():
            meta = read_model_meta(meta_path, ("qa",))
            folder = str(meta.get("weights") or READER_DIR) if meta.get("reader") == "generative" else READER_DIR
            if Path(folder).name != folder:  # a folder of the run, never a path out of it
                raise RagtuneError(f"{meta_path}: weights must name a folder of the run, got {folder!r}")
        if not meta_path.exists() or not any((run_dir / folder / f).exists() for f in ("config.json", "adapter_config.json")):
            raise RagtuneError(f"{run_dir} is not a finished ragtune QA run: missing {MODEL_META} or {folder}/")
        try:
            return cls._from_meta(run_dir, meta, batch_size, device)
        except RagtuneError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise bad_model_meta(meta_path, "qa", exc) from None

    @classmethod
    def _from_meta(cls, run_dir: Path, meta: dict, batch_size: int, device: torch.device) -> QAPredictor:
        from ragtune.retrieval.index import load_index

        if meta.get("reader") == "generative":  # a causal LM in hf_model/, read through the generation predictor
            from ragtune.runs import load_run_model
            from ragtune.tasks.generation.predictor import GenerationPredictor

            tokenizer, model = load_run_model(run_dir, meta, None, device)
            reader = GenerationPredictor(model, tokenizer, meta, batch_size)
        elif (meta.get("lora") or {}).get("save") == "adapter":  # model.lora.save: adapter, onto the pretrained reader
            from ragtune.models.hf import load_lora_adapter, load_hf_tokenizer

            reader = load_reader(meta["name_or_path"])[0]
            reader.model = load_lora_adapter(reader.model, run_dir / READER_DIR, meta["name_or_path"])
            tokenizer = load_hf_tokenizer(str(run_dir / READER_DIR))
        else:
            reader, tokenizer = load_reader(str(run_dir / READER_DIR))
        if not meta.get("reader") == "generative":
            reader.eval()
            reader.to(device)
        index = None
        if int(meta.get("top_k", 0)):
            index = load_index(index_folder(run_dir, meta["index"]), device=device)
        predictor = cls(reader, tokenizer, meta, index, batch_size)
        if meta.get("answer_selection") == "rag" or meta.get("retriever") == "lm_trained":
            import numpy as np

            from ragtune.retrieval.dense import load_encoder

            predictor.use_rag(load_encoder(str(run_dir / meta["query_encoder"]), device=device),
                              torch.from_numpy(np.load(run_dir / meta["passage_embeddings"])).float().to(device),
                              float(meta["temperature"]))
        return predictor

    # -- answering ---------------------------------------------------------------------------------
    def _read(self, questions: list[str], passages: list[str], log_probs: bool = False) -> list[dict]:
        return answer(self.reader, self.tokenizer, questions, passages, max_length=int(self.meta["max_length"]),
                      doc_stride=int(self.meta["doc_stride"]), batch_size=self.batch_size,
                      max_answer_length=int(self.meta["max_answer_length"]), log_probs=log_probs)

    def _retrieve(self, questions: list[str], k: int) -> list[list[tuple[int, float, float]]]:
        """Per question ``(row, retrieval score, log p(z|x) or 0)`` of the top ``k`` passages, best first."""
        if self.query_encoder is None:
            return [[(row, score, 0.0) for row, score in per_question]
                    for per_question in self.index.search_rows(questions, k=k)]
        q = self._encode_queries(questions)  # (B, d), on the device of passage_embeddings
        sims = q @ self.passage_embeddings.T  # (B, N)
        top = sims.topk(k, dim=-1)
        log_p_z = torch.log_softmax(top.values / self.temperature, dim=-1)  # (B, k)
        return [[(int(r), float(s), float(lp)) for r, s, lp in zip(rows, scores, lps)]
                for rows, scores, lps in zip(top.indices.tolist(), top.values.tolist(), log_p_z.tolist())]

    @torch.no_grad()
    def _encode_queries(self, questions: list[str]) -> torch.Tensor:
        """L2-normalised ``(B, d)`` on the device of ``passage_embeddings``; ``encode_query`` runs in eval mode
        (on the encoder's device) and restores the encoder's mode."""
        was_training = self.query_encoder.training
        vectors = self.query_encoder.encode_query(questions, batch_size=self.batch_size, normalize_embeddings=True,
                                                  convert_to_tensor=True, show_progress_bar=False)
        self.query_encoder.train(was_training)
        return vectors.float().to(self.passage_embeddings.device)  # (B, d)

    def answer(self, questions: Sequence[str], contexts: Sequence[str] | None = None) -> list[dict]:
        """One dict per question: ``answer``, ``score`` and, with retrieval, ``passage`` (the one the
        answer comes from) and ``passages`` (the ``top_k`` retrieved, best first, as JSON-ready dicts)."""
        if isinstance(questions, str):
            raise TypeError("questions must be a list of strings, not one string")
        questions = list(questions)
        if not questions:
            return []
        if contexts is not None:
            if len(contexts) != len(questions):
                raise RagtuneError(f"{len(questions)} questions but {len(contexts)} contexts; give one context per question")
            if self.generative:
                return [{"answer": w["answer"], "score": None, "abstained": w["abstained"]}
                        for w in self._write(questions, [[c] for c in self.cutter.cut(contexts)])]
            return [{"answer": r["answer"], "score": r["score"]} for r in self._read(questions, list(contexts))]
        if self.generative and not self.top_k and self.settings.get("train_passages") == "none":  # closed-book
            return [{"answer": w["answer"], "score": None, "passage": None, "passages": [], "citations": [],
                     "abstained": w["abstained"]} for w in self._write(questions, [[] for _ in questions])]
        if not self.top_k:
            raise RagtuneError("this QA run reads no index (retrieval.top_k: 0), so a question alone cannot be answered: "
                               "score a SQuAD-format file with `ragtune eval RUN_DIR --data FILE`, or give each "
                               "question its passage in Python: QAPredictor.from_run_dir(RUN_DIR).answer(questions, contexts)")
        if self.generative:
            keys = ("answer", "score", "passage", "passages", "citations", "abstained")
            return [{k: r[k] for k in keys} for r in self._answer_generative(questions)]
        rag = self.query_encoder is not None
        with torch.no_grad():
            rows = self._retrieve(questions, min(self.top_k, len(self.index)))
        passages = [[self._passage(row, score) for row, score, _ in per_question] for per_question in rows]
        pairs = [(qi, p, log_p_z) for qi, per_question in enumerate(rows)
                 for p, (_, _, log_p_z) in zip(passages[qi], per_question)]
        read = self._read([questions[qi] for qi, _, _ in pairs], [p["text"] for _, p, _ in pairs], log_probs=rag) if pairs else []
        results: list[dict] = [{"answer": "", "score": float("-inf"), "passage": None, "passages": per_question}
                                for per_question in passages]
        for (qi, p, log_p_z), r in zip(pairs, read):
            # RAG: log p(z|x) + log p(span|x,z); otherwise how much the span beats "no answer here"
            score = log_p_z + r["score"] if rag else r["score"] - r["null_score"]
            if score > results[qi]["score"]:
                results[qi].update(answer=r["answer"], score=score, passage=p)
        return results

    # -- the generative reader ---------------------------------------------------------------------
    def _write(self, questions: list[str], passages: list[list[str]], **overrides) -> list[dict]:
        """The generative reader on each question with its passage texts (already cut): ``answer``,
        ``cited`` (passage numbers, 1-based), ``abstained``, the raw ``output``, and ``finish_reason``,
        ``prompt_tokens``, ``completion_tokens`` (:meth:`GenerationPredictor.decode`); ``overrides`` are
        keys of the ``decode:`` section."""
        from ragtune.tasks.qa.prompts import is_abstention, parse_output, user_message

        outputs = self.reader.decode([user_message(q, ps) for q, ps in zip(questions, passages)], **overrides)
        written = []
        for o in outputs:
            answer, cited = parse_output(o["output"], self.settings)
            written.append({**o, "answer": answer, "cited": cited, "abstained": is_abstention(answer, self.settings)})
        return written

    # -- the chat-style interface of a generative run (the OpenAI endpoints, ragtune.serve.openai_api) --
    @property
    def model(self):
        """The language model of a generative reader (None for an extractive one: see ``reader``)."""
        return self.reader.model if self.generative else None

    @property
    def max_length(self) -> int:
        return self.reader.max_length

    @property
    def retriever(self):
        """Truthy when answers come with retrieved passages (the OpenAI layer then sends them along)."""
        return self.index if self.top_k else None

    @staticmethod
    def _question_of(item) -> str:
        """The question of a prompt text, or of a conversation: its last user message (earlier turns are
        not read: each question is answered from its own passages)."""
        if isinstance(item, (list, tuple)):
            users = [str(m["content"]) for m in item if m.get("role") == "user"]
            if not users:
                raise RagtuneError("messages: a qa run answers the last user message, and there is none")
            return users[-1]
        return "" if item is None else str(item)

    def passages_of(self, items) -> list[list[dict]]:
        """The passages each prompt or conversation is answered from, in prompt order ([1] first)."""
        return [r["passages"] for r in self._answer_generative([self._question_of(i) for i in items], write=False)]

    def generate(self, items, details: bool = True, progress: bool = False, **overrides) -> list[dict]:
        """What :meth:`GenerationPredictor.generate` returns, for a generative QA run: each item (a question,
        or a conversation whose last user message is the question) answered from its retrieved passages.
        ``output`` is what the model wrote (``[n]`` citations and a quoted evidence included), with
        ``passages`` (prompt order), ``answer``, ``citations`` (passage ids) and ``abstained``."""
        if not self.generative:
            raise RagtuneError("this qa run's reader is extractive: it answers with spans (/v1/answer), not chat")
        questions = [self._question_of(i) for i in items]
        rows = self._answer_generative(questions, overrides=overrides) if self.top_k else [
            {**w, "passages": [], "citations": []} for w in self._write(questions, [[] for _ in questions], **overrides)]
        keys = ("output", "passages", "answer", "citations", "abstained")
        keys += ("finish_reason", "prompt_tokens", "completion_tokens") if details else ()
        return [{k: r[k] for k in keys} for r in rows]

    def stream(self, item, **overrides):
        """:meth:`GenerationPredictor.stream`'s events for one question: the answer is written whole (it is
        short) and sent as one piece, then the end event."""
        row = self.generate([item], details=True, **overrides)[0]
        if row["output"]:
            yield {"text": row["output"]}
        yield {"text": "", **{k: row[k] for k in ("finish_reason", "prompt_tokens", "completion_tokens")}}

    def _answer_generative(self, questions: list[str], drop_docs: list[str] | None = None, write: bool = True,
                           overrides: dict | None = None) -> list[dict]:
        """Retrieve, write, and map citations onto the passages: see :meth:`answer`. ``drop_docs`` (one
        ``doc_sha1`` per question) leaves that paragraph's passages out (the abstention test)."""
        from ragtune.tasks.qa.prompts import DISTRACTOR_DEPTH

        depth = min(len(self.index), self.top_k + (DISTRACTOR_DEPTH if drop_docs else 0))
        with torch.no_grad():
            rows = self._retrieve(questions, depth)
        passages = []
        for qi, per_question in enumerate(rows):
            kept = [self._passage(row, score) for row, score, _ in per_question]
            if drop_docs is not None:
                kept = [p for p in kept if p["doc_sha1"] != drop_docs[qi]]
            passages.append(kept[:self.top_k])
        if not write:
            return [{"passages": per_question} for per_question in passages]
        texts = [self.cutter.cut([p["text"] for p in per_question]) for per_question in passages]
        results = []
        for per_question, w in zip(passages, self._write(questions, texts, **(overrides or {}))):
            cited = [per_question[n - 1] for n in w["cited"] if 1 <= n <= len(per_question)]
            results.append({**w, "score": None, "passage": cited[0] if cited else None,
                            "passages": per_question, "citations": [p["id"] for p in cited]})
        return results

    def _evaluate_generative(self, records: list[QARecord], with_gold: bool, abstention: bool) -> dict:
        from ragtune.tasks.qa.prompts import gold_passages

        references = answers_by_id(records)
        questions = [r.question for r in records]
        gold_docs = [text_sha1(r.context) for r in records]
        metrics: dict = {}
        if not self.top_k:  # the gold passage, or none (a closed-book run)
            closed = self.settings.get("train_passages") == "none"
            written = self._write(questions, [[] for _ in records] if closed else
                                  [[g] for g in gold_passages(records, None, self.cutter)])
            metrics.update(qa_metrics({r.id: w["answer"] for r, w in zip(records, written)}, references))
            return metrics
        results = self._answer_generative(questions)
        metrics.update(qa_metrics({r.id: res["answer"] for r, res in zip(records, results)}, references))
        metrics["abstained"] = round(100 * sum(res["abstained"] for res in results) / len(results), 2)
        if self.settings.get("cite"):
            cites = [(res["citations"], {p["id"]: p["doc_sha1"] for p in res["passages"]}, gold)
                     for res, gold in zip(results, gold_docs)]
            total = sum(len(ids) for ids, _, _ in cites)
            right = sum(docs[i] == gold for ids, docs, gold in cites for i in ids)
            metrics["citation_precision"] = round(100 * right / total, 2) if total else 0.0
        ranked = [[p["doc_sha1"] for p in res["passages"]] for res in results]
        ks = tuple(sorted({k for k in RECALL_KS if k <= self.top_k} | {self.top_k}))  # recall@top_k: what the prompt held
        metrics.update(retrieval_metrics([_unique(r) for r in ranked], [{g} for g in gold_docs], ks=ks, mrr_k=10, ndcg_k=10))
        if with_gold:
            written = self._write(questions, [[g] for g in gold_passages(records, self.index, self.cutter)])
            reader = qa_metrics({r.id: w["answer"] for r, w in zip(records, written)}, references)
            metrics["reader_exact_match"], metrics["reader_f1"] = reader["exact_match"], reader["f1"]
        if abstention:
            dropped = self._answer_generative(questions, drop_docs=gold_docs)
            metrics["abstention"] = round(100 * sum(res["abstained"] for res in dropped) / len(dropped), 2)
        return metrics

    def _passage(self, row: int, score: float) -> dict:
        """A retrieved passage as a JSON-ready dict (with ``doc_sha1``, which identifies its paragraph)."""
        out = self.index.hit(row, score).to_dict()
        out["doc_sha1"] = self.index.passages[row]["doc_sha1"]
        return out

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self, records: Sequence[QARecord], with_gold: bool = True, abstention: bool = True) -> dict:
        """SQuAD exact match and F1 (0-100) on ``records``.

        With retrieval: end-to-end scores (``exact_match``, ``f1``), the retrieval metrics of the
        gold paragraphs (``recall@k``, ``mrr@10``, ``ndcg@10``; a hit is any passage of the gold
        paragraph), and, when ``with_gold``, the reader's scores given the gold paragraph
        (``reader_exact_match``, ``reader_f1``). Without retrieval the reader reads the gold paragraph.

        A generative reader with retrieval also gives ``abstained`` (the share of answers that are
        ``qa.no_answer``, 0-100), ``citation_precision`` (``qa.cite``: the share of cited passages from
        the gold paragraph) and, when ``abstention``, ``abstention``: the share of questions answered
        ``qa.no_answer`` when their gold paragraph is taken out of the retrieved passages (the next
        ones move up). Its gold passage is the one of the gold paragraph that holds the answer.
        """
        records = list(records)
        if not records:
            raise RagtuneError("no questions to evaluate")
        if self.generative:
            return self._evaluate_generative(records, with_gold, abstention)
        references = answers_by_id(records)
        questions = [r.question for r in records]
        metrics: dict = {}
        if self.top_k:
            results = self.answer(questions)
            metrics.update(qa_metrics({r.id: res["answer"] for r, res in zip(records, results)}, references))
            ranked = [[p["doc_sha1"] for p in res["passages"]] for res in results]
            gold = [{text_sha1(r.context)} for r in records]
            ks = tuple(k for k in RECALL_KS if k <= self.top_k) or (self.top_k,)
            metrics.update(retrieval_metrics([_unique(r) for r in ranked], gold, ks=ks, mrr_k=10, ndcg_k=10))
            if with_gold:
                gold_read = self._read(questions, [r.context for r in records])
                reader = qa_metrics({r.id: g["answer"] for r, g in zip(records, gold_read)}, references)
                metrics["reader_exact_match"], metrics["reader_f1"] = reader["exact_match"], reader["f1"]
        else:
            read = self._read(questions, [r.context for r in records])
            metrics.update(qa_metrics({r.id: g["answer"] for r, g in zip(records, read)}, references))
        return metrics


def _unique(items: list[str]) -> list[str]:
    """``items`` without repeats, first occurrence kept (a paragraph cut into passages counts once)."""
    seen: set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]
