"""Model registry: registered models, immutable versions, aliases with history, flavors, signatures, lineage."""
