"""Shared helpers below the parts (kernels, trainers, dataset builders, evaluation, model cards).

- `files`: atomic writes and private files; `hf_datasets`: opening a built corpus or Hub dataset;
- `openai_chat`: the OpenAI-compatible chat client and endpoint options every part shares;
- `tsv`: VLMEvalKit TSV records and their base64 images;
- `compose`, `tiny`, `export`: GMAI-VL assembled from parts, tiny random models, LLaVA export.

Nothing here imports a part or the application layer (`gmaivl.app`); `tests/test_layers.py` checks it.
"""
