"""What the model reads and writes, shared by the stages that make data, train, evaluate and
serve: ChatML conversations, the task prompts, citation markup."""
