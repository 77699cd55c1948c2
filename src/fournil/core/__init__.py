"""The base every stage builds on: stage bookkeeping (manifests, fingerprints, atomic output),
configuration checks, devices and cores, executors, Parquet shard IO and the run layout."""
