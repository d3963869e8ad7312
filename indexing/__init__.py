"""Text in, vectors and points out: cleaning, embedding and the Qdrant store."""
