"""Serving: the OpenAI-compatible HTTP server, the terminal chat, and the engine both use."""
