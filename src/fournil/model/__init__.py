"""The Qwen3-compatible transformer: config.py (its shape), transformer.py (the model and its
KV cache), generate.py (sampling), and the training-only extras (mtp.py, linear_ce.py)."""
