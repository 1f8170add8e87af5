"""A-B experiments with statistics that resist peeking, and feature flags."""
