"""Each site's own look: the honeypot must not be recognisable as one tool's output.

Harvesters that learn a fingerprint (a CSS class, a comment, a script, a site name) can skip
every site that carries it. So everything a visitor sees that is not the operator's own text is
chosen per site from the site secret: the theme (name and page text, unless the operator names
the site), the class names, how hidden elements are hidden, the wording of the HTML comment, the
script's variable names, the order of the address styles and the name of the guestbook's token
field. One site stays stable across requests (a site that changes shape on every reload is odd
too); two sites share nothing but the page structure.

The guestbook's token ties a comment to the page view that showed the form without trusting the
client: it is the visit id with a MAC under the site secret (``visit_token``/``token_visit``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

_TAG = b"trapline/look/v1\x00"
_TOKEN_TAG = b"trapline/guestbook/v1\x00"

# (name, about paragraph, office hours, street, three people with roles)
THEMES: tuple[tuple[str, str, str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Riverside Community Garden",
        "We are a volunteer-run community garden with forty plots, a seed library and a compost "
        "workshop every first Saturday of the month. New members are always welcome; plots are "
        "assigned in March.",
        "The garden office is staffed on Tuesdays and Saturdays, 9am to noon.",
        "12 Mill Lane, Riverside",
        (("Margaret Hill", "Chair"), ("Tomas Novak", "Treasurer"), ("Priya Patel", "Seed library")),
    ),
    (
        "Eastfield Chess Club",
        "We meet every Thursday evening in the church hall for casual games, a ladder and "
        "coaching for juniors. Visitors may play two evenings before joining.",
        "The club room is open on Thursdays from 7pm; the secretary answers mail on weekends.",
        "St Luke's Hall, Eastfield Road",
        (("David Okafor", "President"), ("Helen Brandt", "Secretary"), ("Sam Whitlow", "Juniors")),
    ),
    (
        "Harbour Singers",
        "A mixed community choir of about sixty voices. We rehearse on Monday nights and give "
        "two concerts a year; no audition, just come along to a rehearsal.",
        "Rehearsals are on Mondays, 7.30 to 9.30pm; the office is open on Wednesday mornings.",
        "The Old School, 4 Quay Street",
        (("Ruth Ellison", "Musical director"), ("Jan Kowal", "Treasurer"), ("Amy Chen", "Music")),
    ),
    (
        "Millbrook Cycling Club",
        "Social rides every Sunday at 9am from the market square, with a café stop. We also "
        "run a beginners' group in spring and a maintenance evening once a month.",
        "Ride leaders answer questions by mail; the clubhouse opens on Sunday mornings.",
        "Market Square, Millbrook",
        (("Chris Dunmore", "Chair"), ("Lena Fischer", "Rides"), ("Omar Haddad", "Membership")),
    ),
    (
        "Westhill Allotment Society",
        "Sixty-two allotments on the old nursery site, a trading hut for seeds and compost, and "
        "a waiting list that moves faster than you think. Open days in May and September.",
        "The trading hut is open on Sunday mornings from 10 until 12.",
        "Nursery Lane, Westhill",
        (("Brian Cole", "Chair"), ("Sofia Russo", "Lettings"), ("Nina Bauer", "Trading hut")),
    ),
    (
        "Oakwood Amateur Astronomers",
        "Monthly talks, observing evenings when the sky is clear, and a loan telescope for "
        "members. Beginners are very welcome; bring binoculars if you have them.",
        "Talks are on the second Friday of the month at 7.45pm.",
        "Oakwood Library, Station Road",
        (("Peter Marsh", "Chair"), ("Grace Adeyemi", "Observing"), ("Ivan Petrov", "Equipment")),
    ),
)
_CLASS_WORDS = ("note", "aside", "extra", "fine", "aux", "misc", "sub", "alt", "meta", "info")
_HIDE_CSS = (
    "display: none;",
    "position: absolute; left: -9999px; top: auto;",
    "visibility: hidden; height: 0; overflow: hidden;",
    "position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);",
)
_COMMENTS = ("webmaster: {}", "contact {}", "site admin - {}", "enquiries: {}", "mail {}")
_JS_NAMES = (("u", "d"), ("a", "b"), ("n", "h"), ("who", "where"), ("x", "y"), ("box", "dom"))
_FIELDS = ("ref", "t", "entry", "sig", "key", "k", "token", "id")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(slots=True, frozen=True)
class SiteLook:
    """What varies between sites (see the module docstring); templates read it as ``look``."""

    site_name: str
    about: str
    hours: str
    street: str
    people: tuple[tuple[str, str], ...]
    hidden_class: str
    plain_class: str
    entity_class: str
    hide_css: str
    comment: str  # format string, {} is the address
    js_names: tuple[str, str]
    order: tuple[int, ...]  # order of the five address styles in _address.html
    token_field: str

    def comment_for(self, address: str) -> str:
        return self.comment.format(address)


class _Draw:
    """Deterministic choices from the site secret (HMAC-SHA256 counter stream)."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, _TAG, hashlib.sha256).digest()
        self._n = 0

    def below(self, n: int) -> int:
        self._n += 1
        block = hmac.new(self._key, self._n.to_bytes(8, "big"), hashlib.sha256).digest()
        return int.from_bytes(block[:8], "big") % n

    def pick(self, options: tuple[str, ...]) -> str:
        return options[self.below(len(options))]

    def word(self) -> str:
        return self.pick(_CLASS_WORDS) + "".join(_LETTERS[self.below(26)] for _ in range(3))


def site_look(secret: bytes, site_name: str = "") -> SiteLook:
    """This site's look; ``site_name`` (the operator's) replaces the theme's name when given."""
    draw = _Draw(secret)
    name, about, hours, street, people = THEMES[draw.below(len(THEMES))]
    classes: list[str] = []
    while len(classes) < 3:
        word = draw.word()
        if word not in classes:
            classes.append(word)
    order = list(range(5))
    for i in range(4, 0, -1):  # Fisher-Yates
        j = draw.below(i + 1)
        order[i], order[j] = order[j], order[i]
    js = _JS_NAMES[draw.below(len(_JS_NAMES))]
    return SiteLook(
        site_name=site_name or name,
        about=about,
        hours=hours,
        street=street,
        people=people,
        hidden_class=classes[0],
        plain_class=classes[1],
        entity_class=classes[2],
        hide_css=draw.pick(_HIDE_CSS),
        comment=draw.pick(_COMMENTS),
        js_names=(js[0], js[1]),
        order=tuple(order),
        token_field=draw.pick(_FIELDS),
    )


def visit_token(secret: bytes, visit_id: str) -> str:
    """The guestbook form's hidden value: the visit id and a MAC, so it cannot be forged."""
    mac = hmac.new(secret, _TOKEN_TAG + visit_id.encode(), hashlib.sha256).hexdigest()[:16]
    return f"{visit_id}.{mac}"


def token_visit(secret: bytes, token: str) -> str | None:
    """The visit id in a token we issued, or None for anything else (forged, edited, absent)."""
    visit_id, _, _mac = token.rpartition(".")
    if not visit_id or len(visit_id) > 40:
        return None
    return visit_id if hmac.compare_digest(visit_token(secret, visit_id), token) else None
