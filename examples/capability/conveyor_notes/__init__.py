"""Notes on any subject: a worked example of a capability that plugs into Conveyor."""
