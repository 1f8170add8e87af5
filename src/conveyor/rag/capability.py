"""RAG as a capability."""

from conveyor.capability import Capability
from conveyor.rag.index import INDEX

CAPABILITY = Capability(
    "rag",
    "retrieval-augmented generation: versioned collections, hybrid BM25 + vector retrieval, "
    "reranking, context packing, evaluation gates",
    requires=("data", "governance", "pipelines"),
    seams=(INDEX,),
)
