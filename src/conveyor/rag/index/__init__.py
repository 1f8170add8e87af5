"""Vector indexes behind one seam, chosen by URL (see :class:`conveyor.rag.types.VectorIndex`)."""

from conveyor.backends import BackendSpec, Seam

__all__ = ["INDEX"]

_PG = BackendSpec("conveyor.rag.index.pgvector:PgVectorIndex", "postgres", ("psycopg",))

INDEX = Seam(
    "index",
    "vector index of a RAG collection",
    {
        "exact": BackendSpec("conveyor.rag.index.exact:ExactIndex", "rag", ("numpy",)),
        "hnsw": BackendSpec("conveyor.rag.index.hnsw:HnswIndex", "rag", ("faiss",)),
        "ivf": BackendSpec("conveyor.rag.index.ivf:IvfIndex", "rag", ("faiss",)),
        "ivfpq": BackendSpec("conveyor.rag.index.ivf:IvfIndex", "rag", ("faiss",)),
        "postgresql": _PG,
    },
    default="hnsw://",
)
