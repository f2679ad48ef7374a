"""Deployment (step 7): the HTTP service behind ``ragtune serve``.

* :mod:`ragtune.serve.service` — what is served (a run, an ONNX export, an index) and its endpoints;
* :mod:`ragtune.serve.batcher` — server-side batching of concurrent requests;
* :mod:`ragtune.serve.metrics` — Prometheus metrics;
* :mod:`ragtune.serve.app` — the FastAPI app (endpoints, limits, API key, the web page);
* :mod:`ragtune.serve.server` — running it under uvicorn, with one or several worker processes.
"""
