"""Benchmark, performance and load-test tooling behind ``jobclass bench``, ``bench-all``, ``bench-perf`` and
``loadtest``. Not serving code: nothing under ``app/`` outside ``app/bench`` and ``app/cli`` imports it
(``tests/unit/test_layering.py``).

- ``accuracy``: ``run_bench``, ``run_cv`` and the shared fit/score steps;
- ``baselines``: the TF-IDF + logistic regression baseline and the hybrid blend weight;
- ``finetune_rows``: the fine-tuned encoder rows of ``bench --finetune``;
- ``extract``: raw vs cleaned vs extracted text (``bench --extract``);
- ``perf``: speed of the embedder, the service and the vector index (``bench-perf``);
- ``loadtest``: a running server under concurrent clients (``loadtest``);
- ``markdown``: every report these write.
"""
