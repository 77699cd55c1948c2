"""The report stage: models before and after post-training, side by side on tasks."""
