"""The data layer: sources, validation with quarantine, profiling, drift,
dataset versions with lineage, deletion and encryption of sensitive data.

Arrow is the format inside; pandas and polars frames are accepted and
returned at the API (:mod:`conveyor.data.frames`). Nothing heavy is imported
until a function that needs it runs.
"""
