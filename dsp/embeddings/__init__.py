"""The embeddings block: a fixed front-end followed by a TFLite embedding model."""
