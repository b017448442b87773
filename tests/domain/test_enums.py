"""The domain's enums are the public protos' numbers, and the native twins agree (one mapping)."""

from __future__ import annotations

import importlib
import os

import pytest

from idlink._native import _contacts_py
from idlink.domain.keytypes import Normalizer
from idlink.domain.linking import RecordOutcome
from idlink.domain.views import ResolveStatus
from idlink.v1 import common_pb2, identity_pb2

CASES = [
    (Normalizer, common_pb2.Normalizer, "NORMALIZER_"),
    (RecordOutcome, common_pb2.RecordOutcome, "RECORD_OUTCOME_"),
    (ResolveStatus, identity_pb2.ResolveStatus, "RESOLVE_STATUS_"),
]


@pytest.mark.parametrize(
    ("enum", "proto", "prefix"), CASES, ids=lambda c: getattr(c, "__name__", "")
)
def test_each_member_is_the_proto_value_of_its_name_and_every_proto_value_has_one(
    enum, proto, prefix
):
    for member in enum:
        assert proto.Value(prefix + member.name) == member
    names = proto.keys()  # an EnumTypeWrapper, not a dict
    named = {name.removeprefix(prefix) for name in names if not name.endswith("UNSPECIFIED")}
    assert named == {member.name for member in enum}


@pytest.mark.parametrize("impl", ["py", "c"])
def test_the_native_twins_number_normalizers_as_the_domain_does(impl):
    if impl == "c" and os.environ.get("IDLINK_PURE_PYTHON") == "1":
        pytest.skip("IDLINK_PURE_PYTHON=1: compiled modules are not built")
    native = _contacts_py if impl == "py" else importlib.import_module("idlink._native._contacts_c")
    assert (native.NORMALIZER_TRIM, native.NORMALIZER_PHONE, native.NORMALIZER_EMAIL) == (
        Normalizer.TRIM,
        Normalizer.PHONE,
        Normalizer.EMAIL,
    )
