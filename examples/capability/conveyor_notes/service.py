"""The capability's service: ``project.notes`` (built once per project, on first use)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.project import Project


@dataclass(frozen=True)
class Note:
    id: str
    subject: str
    text: str
    author: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": self.created_at.isoformat()}


class Notes:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.max_length: int = project.spec.section("notes").max_length

    @classmethod
    def for_project(cls, project: Project) -> Notes:
        return cls(project)

    def add(self, subject: str, text: str, *, actor: str) -> Note:
        """Store a note and record ``note.added`` (an audit event) naming its author."""
        from conveyor_notes.capability import NOTE_ADDED
        from conveyor_notes.tables import NoteRecord

        if not subject or not text:
            raise InvalidInputError("a note needs a subject and some text", field="text")
        if len(text) > self.max_length:
            raise InvalidInputError(
                f"the note has {len(text)} characters; notes.max_length is {self.max_length}",
                field="text",
            )
        row = NoteRecord(id=uuid.uuid4().hex, subject=subject, text=text, author=actor)
        with self.project.store.session() as session:
            session.add(row)
            session.flush()
            note = Note(row.id, row.subject, row.text, row.author, row.created_at)
        self.project.events.record(
            NOTE_ADDED,
            subject=subject,
            actor=actor,
            payload={"note_id": note.id, "length": len(text)},
        )
        return note

    def list(self, subject: str | None = None) -> list[Note]:
        from conveyor_notes.tables import NoteRecord

        stmt = sa.select(NoteRecord).order_by(NoteRecord.created_at, NoteRecord.id)
        if subject is not None:
            stmt = stmt.where(NoteRecord.subject == subject)
        with self.project.store.read() as session:
            return [
                Note(r.id, r.subject, r.text, r.author, r.created_at) for r in session.scalars(stmt)
            ]
