"""RAG as a capability."""

from conveyor.capability import Capability, Command, Tables
from conveyor.rag.events import RAG_EVENTS
from conveyor.rag.index import INDEX

CAPABILITY = Capability(
    "rag",
    "retrieval-augmented generation: versioned collections, hybrid BM25 + vector retrieval, "
    "reranking, context packing, evaluation gates",
    requires=("data", "governance", "pipelines"),
    settings="conveyor.rag.settings:SECTIONS",
    tables=Tables("conveyor.rag:migrations", "conveyor.rag.tables", "conveyor_rag_version"),
    seams=(INDEX,),
    services={"rag": "conveyor.rag.collections:Collections.for_project"},
    cli=(Command("conveyor.rag.cli:rag_app", "rag"),),
    routes="conveyor.rag.http:routes",
    events=RAG_EVENTS,
    actions={
        "rag.search": "viewer",  # search and context: read only
        "rag.build": "deployer",  # a new version, and the live alias when its gate passes
        "rag.alias": "deployer",  # move or roll back an alias: what queries are answered from
        "rag.delete": "admin",  # irreversible: documents removed from every version
    },
)
