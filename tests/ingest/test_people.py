"""Case-view handles: one recipient's name for a person, never the hub's pseudonym."""

from __future__ import annotations

from services.ingest.linkage_keys import person_handle, person_pseudonym, share_pseudonym

KEY = "a linkage key of some length"


def test_a_handle_is_the_recipients_own_and_reveals_no_pseudonym() -> None:
    council, police = person_handle(KEY, "council", 7), person_handle(KEY, "police", 7)
    assert council == person_handle(KEY, "council", 7)  # stable, so a member list is reusable
    assert council != police and council != person_handle(KEY, "council", 8)
    for pseudonym in (person_pseudonym(KEY, 7), share_pseudonym(KEY, 7)):
        assert council[2:] not in pseudonym
    assert person_handle("another key of some length", "council", 7) != council
