"""The SPIFFE id parser (meshsim.proxy.spiffe): each rule of the SPIFFE ID standard, the
ids the mesh issues, and a property: any text parses to an id that prints back the same,
or is refused with SpiffeIdError, never another exception."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsim.proxy.ca import IdentityError, spiffe_id, trust_domain_of
from meshsim.proxy.spiffe import SpiffeId, SpiffeIdError, parse, parse_workload

GOOD = [
    ("spiffe://cluster.local/ns/default/sa/reviews", "cluster.local", "/ns/default/sa/reviews"),
    ("spiffe://cluster.local", "cluster.local", ""),  # the trust domain itself
    ("spiffe://a_b-c.9/Upper/Case_ok/dots.in.segment", "a_b-c.9", "/Upper/Case_ok/dots.in.segment"),
    ("spiffe://td/...", "td", "/..."),  # three dots is a name, not a dot segment
    ("spiffe://td/.hidden/x.", "td", "/.hidden/x."),
    ("spiffe://" + "d" * 255 + "/x", "d" * 255, "/x"),
]

# (id, rule it breaks)
BAD = [
    ("SPIFFE://cluster.local/ns/default/sa/x", "scheme"),
    ("spiffe:/cluster.local/ns/default/sa/x", "scheme"),
    ("https://cluster.local/ns/default/sa/x", "scheme"),
    ("cluster.local/ns/default/sa/x", "scheme"),  # an Istio principal is not a SPIFFE id
    ("", "scheme"),
    ("spiffe://", "trust_domain_empty"),
    ("spiffe:///ns/default/sa/x", "trust_domain_empty"),
    ("spiffe://Cluster.local/ns/default/sa/x", "trust_domain_char"),
    ("spiffe://cluster.local:8443/ns/default/sa/x", "trust_domain_char"),
    ("spiffe://admin@cluster.local/ns/default/sa/x", "trust_domain_char"),
    ("spiffe://cluster%2elocal/ns/default/sa/x", "trust_domain_char"),
    ("spiffe://cluster.local?x=1", "trust_domain_char"),
    ("spiffe://cluster.local#x", "trust_domain_char"),
    ("spiffe://clüster.local/x", "trust_domain_char"),
    ("spiffe://" + "d" * 256 + "/x", "trust_domain_length"),
    ("spiffe://cluster.local/", "trailing_slash"),
    ("spiffe://cluster.local/ns/default/sa/x/", "trailing_slash"),
    ("spiffe://cluster.local//ns/default", "empty_segment"),
    ("spiffe://cluster.local/ns//sa/x", "empty_segment"),
    ("spiffe://cluster.local/ns/../sa/x", "dot_segment"),
    ("spiffe://cluster.local/ns/default/sa/..", "dot_segment"),
    ("spiffe://cluster.local/./ns/default/sa/x", "dot_segment"),
    ("spiffe://cluster.local/ns/default/sa/%78", "path_char"),
    ("spiffe://cluster.local/ns/default/sa/x?admin=1", "path_char"),
    ("spiffe://cluster.local/ns/default/sa/x#frag", "path_char"),
    ("spiffe://cluster.local/ns/default/sa/x y", "path_char"),
    ("spiffe://cluster.local/ns/default/sa/x:1", "path_char"),
    ("spiffe://cluster.local/ns/défault/sa/x", "path_char"),
    ("spiffe://cluster.local/" + "a" * 2048, "length"),
]


@pytest.mark.parametrize(("text", "domain", "path"), GOOD)
def test_valid_ids_parse_and_print_back(text: str, domain: str, path: str) -> None:
    ident = parse(text)
    assert ident == SpiffeId(domain, path)
    assert str(ident) == text


@pytest.mark.parametrize(("text", "rule"), BAD)
def test_each_rule_refuses_its_id(text: str, rule: str) -> None:
    with pytest.raises(SpiffeIdError) as info:
        parse(text)
    assert info.value.rule == rule
    assert repr(text[:20])[:-1] in str(info.value)  # the message quotes the id


def test_a_workload_id_needs_a_path() -> None:
    assert parse_workload("spiffe://cluster.local/ns/a/sa/b").segments == ("ns", "a", "sa", "b")
    with pytest.raises(SpiffeIdError) as info:
        parse_workload("spiffe://cluster.local")
    assert info.value.rule == "no_path"
    assert "names the whole trust domain" in str(info.value)


def test_trust_domain_of_refuses_malformed_ids() -> None:
    assert trust_domain_of("spiffe://cluster.local/ns/a/sa/b") == "cluster.local"
    assert trust_domain_of("spiffe://cluster.local:1/ns/a/sa/b") is None
    assert trust_domain_of("spiffe://Cluster.local/ns/a/sa/b") is None


@pytest.mark.parametrize(
    ("ns", "sa", "field"),
    [
        ("..", "x", "namespace"),
        (".", "x", "namespace"),
        ("default", "..", "service_account"),
        ("default", ".", "service_account"),
        ("default", "a..b", "service_account"),
        ("default", ".a", "service_account"),
        ("default", "a/b", "service_account"),
        ("a/../b", "x", "namespace"),
        ("Default", "x", "namespace"),  # Kubernetes names are lower case
        ("default", "x%2f", "service_account"),
        ("", "x", "namespace"),
        ("default", "", "service_account"),
        ("n" * 64, "x", "namespace"),
        ("default", "s" * 254, "service_account"),
        ("de_fault", "x", "namespace"),
    ],
)
def test_the_ca_issues_only_kubernetes_names(ns: str, sa: str, field: str) -> None:
    with pytest.raises(IdentityError) as info:
        spiffe_id("cluster.local", ns, sa)
    assert info.value.field == field


def test_issued_ids_are_workload_ids() -> None:
    text = spiffe_id("cluster.local", "n" * 63, "a.b-c." + "s" * 240)
    assert parse_workload(text).segments[1] == "n" * 63


_ID_ALPHABET = st.sampled_from([*"spiffe:/.%?#@-_aZ09 é", "spiffe://", "..", "//"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(_ID_ALPHABET, max_size=30).map("".join))
def test_any_text_parses_and_prints_back_or_is_refused(text: str) -> None:
    try:
        ident = parse(text)
    except SpiffeIdError as exc:
        rule = exc.rule
    else:
        rule = ""
        assert str(ident) == text
    if rule:
        return
    rest = text[len("spiffe://") :]
    assert set(rest) <= set(string.ascii_letters + string.digits + "._-/")
    domain, _, path = rest.partition("/")
    assert domain
    assert domain == domain.lower()
    if "/" in rest:
        assert all(segment not in ("", ".", "..") for segment in path.split("/"))
