"""Every migration folder follows NNNN_<what>.py, revision NNNN, revising NNNN-1.

head_revision() relies on it to find the head without importing Alembic.
"""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory

from conveyor.store.migrate import _config, _numbered_head, head_revision, store_chains

LOCATIONS = [*(c.script_location for c in store_chains()), "conveyor.events:migrations"]


@pytest.mark.parametrize("location", LOCATIONS)
def test_numbered_scripts_form_one_chain_whose_head_alembic_agrees_with(location: str) -> None:
    scripts = ScriptDirectory.from_config(_config(location, ""))
    alembic_head = scripts.get_current_head()
    assert _numbered_head(location) == alembic_head == head_revision(location)
    for script in scripts.walk_revisions():
        number = int(script.revision)
        assert script.path.rsplit("/", 1)[1].startswith(f"{number:04d}_")
        expected = None if number == 1 else f"{number - 1:04d}"
        assert script.down_revision == expected
