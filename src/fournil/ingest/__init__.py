"""The ingest stage: raw documents (JSONL, JSON, Parquet, text, PDF, HTML) into Parquet
document shards with their provenance."""
