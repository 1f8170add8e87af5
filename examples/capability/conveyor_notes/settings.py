"""The capability's section of conveyor.yaml (`notes:`); CONVEYOR_NOTES__MAX_LENGTH sets it."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class NotesSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: int = Field(2000, ge=1, description="The longest note, in characters.")


SECTIONS: dict[str, Any] = {
    "notes": (NotesSpec, Field(default_factory=NotesSpec, description="Notes on subjects.")),
}
