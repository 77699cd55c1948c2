"""The passage index: curated documents cut into passages that keep their provenance, a
French BM25 retriever over them, and cited answers from a model (`fournil index`,
`fournil ask`)."""
