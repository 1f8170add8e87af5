"""The model server: routing, batching, caching, auth and the HTTP app (see docs/serving.md)."""
