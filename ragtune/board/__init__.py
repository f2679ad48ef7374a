"""ragtune board: the web page that launches, watches and compares runs and studies (``ragtune board``).

``catalog`` reads a folder of run directories and studies (status, metrics, curves, files), ``jobs`` launches
``ragtune run`` / ``ragtune tune`` as child processes, ``app`` is the FastAPI app and its page.
"""
