"""Response models shared by the endpoints of :mod:`ragtune.serve.app` and :mod:`ragtune.serve.openai_api`."""

from __future__ import annotations

import os

from pydantic import BaseModel, Field, field_validator


class Passage(BaseModel):
    id: str
    doc_id: str
    score: float = Field(..., description="Retrieval score (BM25, cosine or RRF by index kind; reranker logit "
                                          "after reranking).")
    text: str | None = None
    title: str | None = None
    source: str | None = Field(None, description="The corpus file the passage came from (file name only).")
    label: str | None = Field(None, description="Labelled neighbours: the neighbour's label.")
    influence: float | None = None

    @field_validator("source", mode="before")
    @classmethod
    def _file_name_only(cls, source):
        """Every passage the API returns reports its source file by name only."""
        return os.path.basename(str(source)) if source else source
