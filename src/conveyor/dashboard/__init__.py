"""The web dashboard at /ui, served by the same app behind the same keys."""
