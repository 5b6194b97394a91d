"""SPIFFE ids: the one parser every identity in the proxy goes through.

The rules are the SPIFFE ID standard's (docs/mesh-semantics.md, section 8.4):

- the scheme is ``spiffe://``, in lower case;
- the trust domain is 1 to 255 characters of ``[a-z0-9._-]``: no upper case, no port
  (``:``), no user info (``@``), no percent-encoding;
- the path is empty or ``/``-separated segments of ``[A-Za-z0-9._-]``: no empty segment
  (``//``), no trailing ``/``, no ``.`` or ``..`` segment, and so no query (``?``), fragment
  (``#``) or percent-encoding (``%``) either;
- the whole id is at most 2048 bytes.

A *workload* id (the id of an X.509-SVID's leaf certificate) must also have a path: the bare
``spiffe://<trust-domain>`` names the trust domain itself (the X.509-SVID standard, ibid.).

Refusals raise :class:`SpiffeIdError`, whose ``rule`` names the broken rule (for tests and
metrics) and whose message quotes the offending id.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshsim.errors import MeshsimError

__all__ = [
    "MAX_ID_BYTES",
    "MAX_TRUST_DOMAIN",
    "SpiffeId",
    "SpiffeIdError",
    "check_trust_domain",
    "parse",
    "parse_workload",
]

SCHEME = "spiffe://"
MAX_ID_BYTES = 2048
MAX_TRUST_DOMAIN = 255
_TRUST_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_SEGMENT_CHARS = _TRUST_DOMAIN_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class SpiffeIdError(MeshsimError):
    """An id that breaks the SPIFFE ID standard; ``rule`` says which rule."""

    def __init__(self, rule: str, text: str, why: str) -> None:
        shown = text if len(text) <= 120 else text[:117] + "..."
        super().__init__(f"not a SPIFFE id: {shown!r}: {why}")
        self.rule = rule


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    path: str
    """Empty, or ``/seg/seg...``."""

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}{self.path}"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")[1:]) if self.path else ()


def _bad_char(c: str) -> str:
    named = {
        ":": "a port",
        "@": "user info",
        "%": "percent-encoding",
        "?": "a query",
        "#": "a fragment",
    }
    return named.get(c, f"the character {c!r}")


def check_trust_domain(domain: str, text: str | None = None) -> None:
    """Raise :class:`SpiffeIdError` unless ``domain`` is a SPIFFE trust domain name."""
    text = domain if text is None else text
    if not domain:
        raise SpiffeIdError("trust_domain_empty", text, "the trust domain is empty")
    if len(domain) > MAX_TRUST_DOMAIN:
        raise SpiffeIdError(
            "trust_domain_length", text, f"the trust domain is over {MAX_TRUST_DOMAIN} characters"
        )
    for c in domain:
        if c not in _TRUST_DOMAIN_CHARS:
            what = "upper case" if c.isupper() else _bad_char(c)
            raise SpiffeIdError(
                "trust_domain_char",
                text,
                f"the trust domain has {what} (only a-z, 0-9, '.', '-' and '_' are allowed)",
            )


def parse(text: str) -> SpiffeId:
    """The SPIFFE id ``text``; raises :class:`SpiffeIdError` naming the rule it breaks."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise SpiffeIdError("length", text, f"longer than {MAX_ID_BYTES} bytes")
    if not text.startswith(SCHEME):
        raise SpiffeIdError("scheme", text, "the scheme must be 'spiffe://' (lower case)")
    rest = text[len(SCHEME) :]
    cut = rest.find("/")
    domain, path = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    check_trust_domain(domain, text)
    if not path:
        return SpiffeId(domain, "")
    if path.endswith("/"):
        raise SpiffeIdError("trailing_slash", text, "the path ends with '/'")
    for segment in path[1:].split("/"):
        if not segment:
            raise SpiffeIdError("empty_segment", text, "the path has an empty segment ('//')")
        if segment in (".", ".."):
            raise SpiffeIdError("dot_segment", text, f"the path has a {segment!r} segment")
        for c in segment:
            if c not in _SEGMENT_CHARS:
                raise SpiffeIdError(
                    "path_char",
                    text,
                    f"the path has {_bad_char(c)} (segments are A-Z, a-z, 0-9, '.', '-', '_')",
                )
    return SpiffeId(domain, path)


def parse_workload(text: str) -> SpiffeId:
    """A workload's id: a SPIFFE id with a path (the bare trust-domain id is refused)."""
    ident = parse(text)
    if not ident.path:
        raise SpiffeIdError(
            "no_path", text, "a workload id needs a path (this id names the whole trust domain)"
        )
    return ident
