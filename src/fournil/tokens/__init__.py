"""The tokens stage (packing curated text into token shards) and what reads them back:
datasets, windows, mixtures and phases, batches."""
