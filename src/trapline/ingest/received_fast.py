"""Fast path of the Received parser: the hop shapes most real mail has, read by one match.

:mod:`trapline.ingest.received` is a tolerant clause splitter (comments masked, clauses cut at
keywords, each read with small patterns), which is slow in CPython. Most headers are one of a
handful of MTA shapes, for which one anchored regex gives the same fields at a fraction of the
cost. ``fast_hop`` answers only when it is sure to agree with the general path
(checked hop by hop on the SpamAssassin corpus and under mutation fuzzing) and returns
``None`` otherwise. The small field helpers both paths share live here too.
"""

from __future__ import annotations

import re
from datetime import datetime

from trapline.ingest.hop_text import HELO_IN_COMMENT, clean_name, first_ip
from trapline.ingest.trust import normalize_ip
from trapline.model import Hop

__all__ = ["fast_hop"]

# Fast path: the shapes most real hops have, read by one anchored match: sendmail/Postfix
# "from helo ([user@]rdns [ip]) by host (..) with proto (..) id x (..) for <addr> (..)",
# fetchmail "from helo [ip] by ...", and "(from user@host) by ..." / "by ..." local hops.
# Tokens are printable ASCII without "(", ")", ";" and the from-comments are flat, so masking
# and clause cutting would find exactly these spans; anything else (nesting, HELO comments, IPv6,
# odd order) goes the general way. ``fast_hop`` checks the few cases where they could differ.
# A token that is itself a clause keyword (or one followed by "[") would start a clause in the
# general path; the lookahead keeps such hops off the fast path.
_NOT_KEYWORD = r"(?!(?i:from|by|via|with|id|for)(?:[ \[]|$))"
_TOKEN = _NOT_KEYWORD + r"[\x21-\x27\x2a-\x3a\x3c-\x7e]+"
_NO_BRACKET_TOKEN = _NOT_KEYWORD + r"[\x21-\x27\x2a-\x3a\x3c-\x5a\x5c\x5e-\x7e]+"
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
# Comments after the by/with/id/for tokens are masked whole by the general path, one level of
# nesting included ("(Exim 3.31 #1 (Debian))").
_FLAT = r"(?: \([^()]*(?:\([^()]*\)[^()]*)*\))*"
# A HELO value exactly as HELO_IN_COMMENT's group reads it when a ")" follows.
_HELO_VALUE = r"\[[^\]\s()]*\]|[^\s()\[\]]+"
_FAST_SHAPE = re.compile(
    rf"(?:from (?:(?P<tok>{_TOKEN}) (?:"
    rf"(?P<comment>\((?P<user>[^\s@()\[]+@)?"
    rf"(?:(?P<rdns>[A-Za-z0-9_][A-Za-z0-9_.-]*) )?\[(?P<cip>{_IPV4})\]\))"
    rf"|\(\[(?P<eip>{_IPV4})\] (?i:helo)=(?P<eval>{_HELO_VALUE})\)"
    rf"|\((?i:helo) (?P<qval>{_HELO_VALUE})\) \((?P<qip>{_IPV4})\)"
    rf"|\((?P<bare>{_IPV4})\))"
    rf"|(?:(?P<fhelo>{_NO_BRACKET_TOKEN}) )?(?P<bracket>\[(?P<bip>{_IPV4})\])) "
    rf"|\([^()]*\) )?"
    rf"by (?P<by>{_TOKEN}){_FLAT}(?: with (?P<with>{_TOKEN}){_FLAT})?"
    rf"(?: id (?P<id>{_TOKEN}){_FLAT})?(?: for (?P<for>{_TOKEN}){_FLAT})?"
)
# qmail's "(qmail 1234 invoked from network)": the whole head is one flat comment.
_ONE_COMMENT = re.compile(r"\([^()]*\)")


def fast_hop(head: str, value: str, index: int, timestamp: datetime | None) -> Hop | None:
    """The hop for a canonical-shaped ``head``, or ``None`` to take the general path.

    Gives exactly what the general path would for these shapes; a token that is itself a
    clause keyword, a HELO inside the comment or an unreadable IP falls back.
    """
    if head[:1] == "(":
        if _ONE_COMMENT.fullmatch(head) is None:
            return None
        low = head.lower()
        local = "qmail" in low and "invoked" in low
        return Hop(index=index, raw=value, protocol="local" if local else None, timestamp=timestamp)
    m = _FAST_SHAPE.fullmatch(head)
    if m is None:
        return None
    (tok, comment, user, rdns_tok, cip, eip, eval_, qval, qip, bare, fhelo, bracket, bip, by_tok,
     proto_tok, id_tok, for_tok) = m.groups()  # fmt: skip
    if proto_tok is not None and proto_tok.lower() == "microsoft":
        return None
    helo = rdns = ip = None
    if comment is not None:
        if ("elo" in comment or "ELO" in comment) and HELO_IN_COMMENT.search(comment):
            return None
        if user is None and (rdns_tok is None or not rdns_tok[0].isdigit()):
            # no other text in "(rdns [ip])" can start an IP candidate: _first_ip's answer
            ip = normalize_ip(cip)
        else:
            ip = first_ip(comment)
        if ip is None:
            return None
        helo = clean_name(tok)
        if rdns_tok is not None:
            # _RDNS_BEFORE_BRACKET's lazy group leaves out one trailing dot
            name = rdns_tok[:-1] if rdns_tok.endswith(".") else rdns_tok
            if name.lower() != "unknown":
                rdns = clean_name(name)
    elif bracket is not None:
        ip = normalize_ip(bip)
        if ip is None:
            return None
        helo = clean_name(fhelo or bracket)
    elif eip is not None or qip is not None:
        # Exim "from rdns ([ip] helo=x)", qmail "from rdns (HELO x) (ip)": the leading token is
        # the receiver's lookup, the HELO value the client's claim (as in _parse_from).
        token = tok
        ip_text = eip if eip is not None else qip
        if token.startswith("["):
            return None
        ip = normalize_ip(ip_text)
        if ip is None:
            return None
        helo = clean_name(eval_ if eip is not None else qval)
        if token.lower() != "unknown":
            rdns = clean_name(token)
    elif bare is not None:
        # qmail "from rdns (ip)": the name is tcpserver's lookup unless Exchange wrote the line
        token = tok
        ip = normalize_ip(bare)
        if ip is None:
            return None
        helo = clean_name(token)
        if (
            "microsoft" not in head.lower()
            and token.lower() != "unknown"
            and normalize_ip(token) is None
        ):
            rdns = clean_name(token)
    # Positional, in Hop's field order: keywords cost more per hop on this hot path.
    return Hop(
        index,
        value,
        helo,
        rdns,
        ip,
        clean_name(by_tok),
        proto_tok.rstrip(";,") if proto_tok is not None else None,  # protocol
        id_tok.rstrip(";,") if id_tok is not None else None,  # smtp_id
        (for_tok.strip("<>;,") or None) if for_tok is not None else None,  # for_addr
        timestamp,
    )
