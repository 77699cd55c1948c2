"""The pretrain stage: next-token prediction on token shards."""
