"""Synthetic data: task generators grounded in seed documents, LLM backends, verifiers."""
