"""Embedding models behind one seam: the default ONNX Runtime encoder, sentence-transformers,
and OpenAI-compatible endpoints."""
