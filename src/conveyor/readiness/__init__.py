"""The production readiness report: the project held against its spec's success criteria."""
