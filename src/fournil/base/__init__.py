"""The base stage: an open model (a Hugging Face folder or a GGUF file) taken in as the start of
a run, with its lineage: name, files, license, architecture, declared training data."""
