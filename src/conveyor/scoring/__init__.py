"""Batch scoring: a model version over files, a query or a data set, in resumable partitions."""
