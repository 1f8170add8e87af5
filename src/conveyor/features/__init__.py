"""The feature store: definitions once (``features:`` in the spec), point-in-time correct
training frames (:mod:`conveyor.features.offline`), an online store with the same TTLs
(:mod:`conveyor.features.online`), and versioned definitions (``conveyor features apply``).

Importing this package imports neither DuckDB nor Arrow.
"""
