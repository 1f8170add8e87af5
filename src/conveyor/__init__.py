"""Conveyor: from a working prototype to production."""
