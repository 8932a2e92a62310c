"""Canonical bytes must equal securesystemslib's encode_canonical, byte for byte."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from securesystemslib.formats import encode_canonical
from wavesign.shared.canonical import canonical_bytes, digest
from wavesign.shared.errors import CanonicalJSONError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical_bytes_equal_securesystemslib(value: object) -> None:
    try:
        expected = encode_canonical(value).encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(CanonicalJSONError):
            canonical_bytes(value)
        return
    assert canonical_bytes(value) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(alphabet=st.characters(min_codepoint=0x80, blacklist_categories=["Cs"])),
        st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    )
)
def test_non_ascii_keys_sort_by_code_point(value: dict[str, str]) -> None:
    assert canonical_bytes(value) == encode_canonical(value).encode("utf-8")


def test_digest_is_sha256_of_canonical_bytes() -> None:
    signed = {"_type": "targets", "version": 3, "targets": {"a": {"length": 1}}}
    assert digest(signed) == hashlib.sha256(encode_canonical(signed).encode()).hexdigest()


@pytest.mark.parametrize(
    ("value", "where"),
    [({"a": [1, 2.5]}, "$.a[1]"), ({1: "x"}, "$"), ({"b": b"bytes"}, "$.b")],
)
def test_refused_values_name_their_place(value: object, where: str) -> None:
    with pytest.raises(CanonicalJSONError) as info:
        canonical_bytes(value)
    assert where in str(info.value)
