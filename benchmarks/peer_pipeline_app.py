"""The peer of the HTTP benchmark: the FastAPI app a user would write around ``transformers.pipeline``.

    PEER_MODEL=bench_out/bbc3_minilm/hf_model uvicorn benchmarks.peer_pipeline_app:app --port 8001

Same request and response shape as ragtune's ``/v1/predict``; the texts are cut to ``PEER_MAX_LENGTH``
tokens (default 256, the run's ``model.max_length``) as ragtune cuts them.
"""

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "1")))
MAX_LENGTH = int(os.environ.get("PEER_MAX_LENGTH", "256"))
classifier = pipeline("text-classification", model=os.environ["PEER_MODEL"], top_k=None, device=-1)
app = FastAPI()


class Request(BaseModel):
    texts: list[str]


@app.post("/v1/predict")
def predict(request: Request):
    outputs = classifier(request.texts, truncation=True, max_length=MAX_LENGTH)
    return {"predictions": [{"label": max(o, key=lambda d: d["score"])["label"],
                             "scores": {d["label"]: d["score"] for d in o}} for o in outputs]}


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
