"""A serving fleet: several servers behind nginx or HAProxy sharing PostgreSQL and Redis."""
