"""Decontamination: no evaluation text in the training texts (`fournil decontam`)."""
