"""`sapiens2 serve`: the task predictors behind an HTTP API and a web page.

One module per job: `limits` (what a request may cost, and the errors that say so), `metrics` (Prometheus
text), `batching` (one worker per model gathering concurrent requests into one forward pass), `models` (the
predictors the server holds, or why one is missing), `pipeline` (one request through the predictor's own
prepare -> run -> finish and its result's own writers), `app` (the FastAPI routes and the page), `cli` (the
sub-command). FastAPI and uvicorn are an optional extra: `pip install "sapiens2[serve]"`.
"""
