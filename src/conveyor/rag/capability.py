"""RAG as a capability."""

from conveyor.capability import Capability, Command, Tables
from conveyor.rag.events import RAG_EVENTS

CAPABILITY = Capability(
    "rag",
    "retrieval-augmented generation: versioned collections, hybrid BM25 + vector retrieval, "
    "reranking, context packing, evaluation gates",
    requires=("data", "governance", "pipelines"),
    settings="conveyor.rag.settings:SECTIONS",
    tables=Tables("conveyor.rag:migrations", "conveyor.rag.tables", "conveyor_rag_version"),
    # The vector index is chosen per collection by URL (rag.collections.NAME.index) through
    # conveyor.rag.index.INDEX, not under backends: a collection's index needs its
    # dimension and namespace to be opened, which a project-wide seam (and doctor's probe
    # of it) does not have.
    services={
        "rag": "conveyor.rag.collections:Collections.for_project",
        # the embedding models, for a capability that embeds without importing RAG (the
        # gateway's semantic cache)
        "embedders": "conveyor.rag.embed.service:Embedders.for_project",
    },
    cli=(Command("conveyor.rag.cli:rag_app", "rag"),),
    routes="conveyor.rag.http:routes",
    doctor="conveyor.rag.doctor:doctor_check",
    events=RAG_EVENTS,
    actions={
        "rag.search": "viewer",  # search and context: read only
        "rag.build": "deployer",  # a new version, and the live alias when its gate passes
        "rag.alias": "deployer",  # move or roll back an alias: what queries are answered from
        "rag.delete": "admin",  # irreversible: documents removed from every version
    },
)
