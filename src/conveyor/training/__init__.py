"""Training: runs, validation gates, continuous training and model optimization."""
