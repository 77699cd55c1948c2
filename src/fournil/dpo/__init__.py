"""The dpo stage: preference tuning against a frozen reference."""
