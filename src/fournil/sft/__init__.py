"""The sft stage: supervised fine-tuning on chats, after data selection."""
