"""The two ways a records file's contacts are prepared give the same columns.

``records_file.prepare_entries`` takes the whole-column path (entries grouped
per key type and source, ``prepare_many`` once per group on distinct values)
and falls back to the entry-by-entry path only when something must be
refused. Both must give, entry for entry, what ``prepare_contact`` gives one
contact: the same PID, cleaned value, invalid reason (BLOCKED included) and
source.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from idlink.domain.keytypes import NORMALIZER_TRIM, AccountConfig, KeyType, default_key_types
from idlink.generations import records_file

SECRET = bytes(range(32))

VALUES = {
    "phone": ["+14155550100", " +1 (415) 555-0101 ", "0044 20 7946 0000", "12", "+999", ""],
    "email": ["a@x.com", " A@X.com", "no@email.com", "bad", "b@y.org", "\u200bc@z.net"],
    "id": ["C-1", " C-1 ", "C-2", "x" * 40, ""],
    "member": ["M1", "m1", "M 2"],
}


def _config() -> AccountConfig:
    types = dict(default_key_types())
    types["email"] = replace(types["email"], blocked_values=("no@email.com",))
    types["member"] = KeyType("member", normalizer=NORMALIZER_TRIM, source_scoped=True)
    return AccountConfig("acme", 1, types)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(VALUES)), st.sampled_from(["crm", "web"]), st.integers(0, 5)
        ),
        min_size=1,
        max_size=40,
    )
)
def test_the_column_path_equals_the_entry_by_entry_path(rows: list[tuple[str, str, int]]) -> None:
    parsed = records_file.ParsedFile(Path("r.csv"))
    for record in range((len(rows) + 2) // 3):
        parsed.line.append(record + 2)
        parsed.source.append("crm")
        parsed.record_id.append(str(record))
        parsed.observed_at_us.append(1_000_000 * (record + 1))
        parsed.deleted.append(False)
    for i, (type_name, source, pick) in enumerate(rows):
        values = VALUES[type_name]
        parsed.entry_record.append(i // 3)
        parsed.entry_type.append(type_name)
        parsed.entry_source.append(source)
        parsed.entry_value.append(values[pick % len(values)])
    config = _config()
    columns = records_file._prepare_columns(parsed, config, SECRET)
    one_by_one = records_file._prepare_one_by_one(parsed, config, SECRET)
    assert columns is not None, "nothing here needs refusing"
    assert columns.pid == one_by_one.pid
    assert columns.cleaned == one_by_one.cleaned
    assert columns.invalid_reason == one_by_one.invalid_reason
    assert columns.source == one_by_one.source
    assert [k.name for k in columns.key_type] == [k.name for k in one_by_one.key_type]
    assert "BLOCKED" in one_by_one.invalid_reason or "no@email.com" not in parsed.entry_value
