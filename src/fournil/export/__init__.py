"""Exports: a Hugging Face folder (config, safetensors, tokenizer, model card) and GGUF."""
