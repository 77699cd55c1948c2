"""The transformer: config.py (its shape and its family's switches, to and from HF configs),
transformer.py (the model and its KV cache), rope.py (RoPE and its scalings), folder.py (model
folders on disk, ours and HF's), generate.py (sampling), the import of an open base (gguf.py:
a GGUF or an HF folder as an ImportedModel, imported.py, gguf_tokenizer.py), and the
training-only extras (mtp.py, linear_ce.py)."""
