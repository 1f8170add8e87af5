"""Everything the capability brings, declared once; Conveyor finds it by the entry point."""

from conveyor.capability import Capability, Command, EventKind, Tables

#: The one event the capability writes: an audit event (committed before add() returns).
NOTE_ADDED = EventKind(
    "note.added",
    "audit",
    {"note_id": str, "length": int},
    "someone wrote a note about a subject",
)

CAPABILITY = Capability(
    "notes",
    "notes on any subject: a model, a data set, an incident",
    requires=("governance",),
    settings="conveyor_notes.settings:SECTIONS",
    tables=Tables("conveyor_notes:migrations", "conveyor_notes.tables", "conveyor_notes_version"),
    services={"notes": "conveyor_notes.service:Notes.for_project"},
    cli=(Command("conveyor_notes.cli:app", "notes"),),
    routes="conveyor_notes.http:routes",
    events=(NOTE_ADDED,),
    actions={"notes.read": "viewer", "notes.write": "deployer"},
)
