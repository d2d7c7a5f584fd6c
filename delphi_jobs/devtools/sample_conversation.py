"""A realistic, Polis-shaped sample conversation for the demo and the tests.

The conversation is a city consultation on transport, housing and parks. Participants belong to opinion
groups that really exist in the votes: each group has a stance on each comment (agree, disagree or
unsure), each participant votes on a random part of the comments only, with some passes, some noise and
some changed votes; a few off-topic or abusive comments are moderated out (mod = -1) after collecting
some votes, as happens in Polis. Everything follows from the seed, and the returned object keeps each
participant's true group so tests can check that the math finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg2.extras import execute_values

from delphi_jobs.devtools.pipeline.polis_math import AGREE, DISAGREE, PASS

DEFAULT_ZID = 1
DEFAULT_PARTICIPANTS = 300
DEFAULT_COMMENTS = 56
DEFAULT_MODERATED = 4
DEFAULT_GROUPS = 3
START_MS = 1_735_700_400_000
"""2025-01-01 03:00 UTC: a fixed clock, so the same seed gives the same rows."""

TOPIC = "Our city in 2035: getting around, a place to live, and green space"
DESCRIPTION = (
    "The city council is preparing its ten-year plan. Tell us what matters to you about transport, "
    "housing and parks: vote on the statements below and add your own. Statements are moderated; "
    "off-topic or abusive ones are removed."
)

GROUP_NAMES = ("urbanists", "motorists and homeowners", "budget watchers", "young families")
"""The archetypes behind the groups, in the order of the stance letters below."""

# theme, stance per archetype (a agree, d disagree, p unsure), text.
COMMENT_BANK: tuple[tuple[str, str, str], ...] = (
    ("transport", "adda", "Protected bike lanes should be added on every major street to make cycling safe."),
    (
        "transport",
        "adda",
        "Buses on the main routes should run every ten minutes, even if transit costs more.",
    ),
    (
        "transport",
        "dadp",
        "Parking for cars downtown is already too hard to find; we need more spaces, not fewer.",
    ),
    (
        "transport",
        "aaaa",
        "Potholes on residential streets should be repaired much faster than they are today.",
    ),
    ("transport", "adpa", "Speed limits for cars on residential streets should be lowered to 20 mph."),
    ("transport", "addp", "Public transit should be free for everyone who lives here."),
    ("transport", "adad", "A congestion charge for cars driving downtown would cut traffic in the centre."),
    (
        "transport",
        "daap",
        "The light rail transit extension is a waste of money that few people will ever ride.",
    ),
    ("transport", "aada", "The city, not homeowners, should clear snow from sidewalks and streets."),
    ("transport", "paap", "Traffic lights should be timed so that cars do not have to stop at every block."),
    ("transport", "daap", "Taxis and ride-share cars should be allowed to use the bus lanes."),
    (
        "transport",
        "appa",
        "Every school should have a safe walking and cycling route, away from heavy traffic.",
    ),
    (
        "transport",
        "paap",
        "Charging stations for electric cars should be paid for by the companies that profit.",
    ),
    (
        "transport",
        "daap",
        "Taking traffic lanes away from cars to make room for buses will only make congestion worse.",
    ),
    ("transport", "appa", "Late-night bus service would help shift workers travel safely."),
    (
        "transport",
        "padp",
        "We should build more park-and-ride lots so drivers can take the bus into the centre.",
    ),
    ("transport", "dada", "Rental scooters clutter the sidewalks and streets and should be banned."),
    (
        "transport",
        "aaaa",
        "Crosswalks near schools need better lighting so drivers see people crossing the street.",
    ),
    ("transport", "daap", "Road maintenance for cars should come before any new transit project."),
    ("transport", "appa", "Every bus stop should show real-time arrival information."),
    (
        "housing",
        "adap",
        "Apartment buildings should be allowed in neighbourhoods that now allow only single-family homes.",
    ),
    ("housing", "adda", "New housing developments must include a share of affordable homes."),
    ("housing", "adda", "Rent increases for tenants should be capped at the rate of inflation."),
    ("housing", "dadp", "Building heights downtown should stay limited, even if it means fewer new homes."),
    ("housing", "apaa", "Getting a permit to build new homes takes far too long and should be simplified."),
    ("housing", "apda", "Short-term holiday rentals are taking homes off the market and driving up rents."),
    ("housing", "daad", "Property taxes are already too high to pay for new housing programmes."),
    ("housing", "adad", "Minimum parking requirements for new apartment buildings should be abolished."),
    ("housing", "apaa", "Homeowners should be allowed to build a small second home in their back garden."),
    ("housing", "adda", "The city should buy empty buildings and turn them into social housing."),
    (
        "housing",
        "dadp",
        "New housing developments are changing the character of our neighbourhoods for the worse.",
    ),
    ("housing", "aapa", "Nobody who works full time here should be unable to afford rent or a home."),
    ("housing", "paaa", "Housing developers should pay for the roads and schools their projects require."),
    ("housing", "adda", "Homes kept empty for speculation should pay an extra tax."),
    ("housing", "apaa", "More student housing near the university would free up family homes."),
    ("housing", "daad", "Housing support should go only to people who are actively looking for work."),
    ("housing", "adda", "Tiny-home villages are a humane way to get homeless people housed quickly."),
    ("housing", "dadp", "No more large apartment towers should be approved until the roads are upgraded."),
    ("housing", "apda", "Landlords who neglect repairs in rented homes should face much larger fines."),
    ("housing", "adpa", "Zoning rules for housing should be the same in every neighbourhood, rich or poor."),
    ("parks", "aada", "Everyone should live within a ten-minute walk of a park."),
    ("parks", "aapa", "Parks need more public toilets and drinking fountains."),
    ("parks", "appd", "Dogs should be allowed off the lead in more parks."),
    ("parks", "apda", "The whole riverside should become one continuous public park."),
    ("parks", "apda", "More trees and green space would keep the city cool in summer."),
    ("parks", "ddad", "When money is tight, the parks budget should be the first to be cut."),
    ("parks", "aaaa", "Playgrounds in our parks should be inspected and repaired more often."),
    ("parks", "pada", "Sports fields in parks should have lights so they can be used in the evening."),
    ("parks", "daap", "Private companies should be allowed to sponsor and run park facilities."),
    ("parks", "apda", "Every large park should set aside space for community gardens."),
    ("parks", "dapa", "Parks should close at dusk to cut down on crime and noise."),
    ("parks", "dapp", "Concerts and festivals in parks bring too much noise for the neighbours."),
    (
        "parks",
        "paaa",
        "Volunteers could look after the smaller parks if the city gave them tools and training.",
    ),
    ("parks", "appa", "Parks should be smoke-free, and that should include e-cigarettes."),
    ("parks", "adpa", "City-owned golf courses should be turned into public parks for everyone."),
    ("parks", "aaaa", "Picnic areas and benches in the parks need cleaning more regularly."),
    ("parks", "adda", "A new skate park would give teenagers somewhere to go."),
    ("parks", "dada", "Parking at the big parks should be free."),
    ("parks", "apda", "Entry to the botanical garden, the biggest green space in town, should be free."),
    ("parks", "aada", "The remaining woodland and green space should be protected from any development."),
)

MODERATED_BANK: tuple[str, ...] = (
    "Buy cheap sunglasses at my website, best prices in town!!!",
    "Whoever wrote this survey is an idiot.",
    "Did anyone watch the game last night?",
    "Vote for me in the council election, I will fix everything.",
    "asdf asdf asdf",
    "The mayor is a crook and everyone who voted for him is a moron.",
    "First!",
    "Follow my channel for daily videos about cats.",
)

# Probability of agree / disagree / pass for a participant fully in line with their group's stance.
_STANCE_PROBABILITIES = {
    "a": (0.80, 0.08, 0.12),
    "d": (0.08, 0.80, 0.12),
    "p": (0.25, 0.25, 0.50),
}
# Statements every group agrees with (e.g. "fix the playgrounds") draw near-unanimous agreement, as in
# real conversations, so that group-aware consensus clears the narrative's bars (0.7 for two groups).
_CONSENSUS_PROBABILITIES = (0.96, 0.01, 0.03)
_GROUP_SHARES = {2: (0.55, 0.45), 3: (0.40, 0.34, 0.26), 4: (0.31, 0.27, 0.23, 0.19)}
_MODERATED_VOTE_RATE = 0.12
_CHANGED_VOTE_RATE = 0.02
_MIN_VOTES = 10


@dataclass(frozen=True)
class SampleComment:
    tid: int
    pid: int
    """The author."""
    txt: str
    created: int
    mod: int
    """Polis moderation: 1 accepted, 0 not yet moderated, -1 moderated out."""
    theme: str
    """transport, housing, parks, or "moderated" for the removed ones."""


@dataclass(frozen=True)
class SampleVote:
    pid: int
    tid: int
    vote: int
    """-1 agree, 1 disagree, 0 pass (Polis)."""
    created: int


@dataclass(frozen=True)
class SampleConversation:
    zid: int
    topic: str
    description: str
    created: int
    comments: tuple[SampleComment, ...]
    votes: tuple[SampleVote, ...]
    """Every vote cast, changed votes included, in time order (the ``votes`` table)."""
    participant_groups: tuple[int, ...]
    """Ground truth: the opinion group of participant pid at index pid."""
    group_names: tuple[str, ...]

    @property
    def participants(self) -> int:
        return len(self.participant_groups)

    @property
    def latest_votes(self) -> tuple[SampleVote, ...]:
        """The last vote of each participant on each comment (``votes_latest_unique``)."""
        latest: dict[tuple[int, int], SampleVote] = {}
        for vote in self.votes:
            latest[(vote.pid, vote.tid)] = vote
        return tuple(sorted(latest.values(), key=lambda v: (v.pid, v.tid)))

    @property
    def visible_tids(self) -> tuple[int, ...]:
        """Comments that are not moderated out (mod > -1)."""
        return tuple(c.tid for c in self.comments if c.mod > -1)


def generate_sample(
    seed: int = 0,
    *,
    zid: int = DEFAULT_ZID,
    participants: int = DEFAULT_PARTICIPANTS,
    comments: int = DEFAULT_COMMENTS,
    moderated: int = DEFAULT_MODERATED,
    groups: int = DEFAULT_GROUPS,
) -> SampleConversation:
    """Build a conversation; ``comments`` counts the on-topic ones, ``moderated`` the removed ones."""
    if groups not in _GROUP_SHARES:
        raise ValueError(f"groups must be 2, 3 or 4, got {groups}")
    if not 1 <= comments <= len(COMMENT_BANK):
        raise ValueError(f"comments must be between 1 and {len(COMMENT_BANK)}, got {comments}")
    if not 0 <= moderated <= len(MODERATED_BANK):
        raise ValueError(f"moderated must be between 0 and {len(MODERATED_BANK)}, got {moderated}")
    if participants < groups:
        raise ValueError(f"participants must be at least the number of groups ({groups}), got {participants}")
    rng = np.random.default_rng(seed)

    truth = _assign_groups(rng, participants, groups)
    chosen = sorted(rng.choice(len(COMMENT_BANK), size=comments, replace=False).tolist())
    removed = rng.choice(len(MODERATED_BANK), size=moderated, replace=False).tolist()
    entries = [COMMENT_BANK[i] for i in chosen] + [("moderated", "", MODERATED_BANK[i]) for i in removed]
    order = rng.permutation(len(entries))
    sample_comments = []
    for tid, index in enumerate(order.tolist()):
        theme, _, text = entries[index]
        sample_comments.append(
            SampleComment(
                tid=tid,
                pid=int(rng.integers(participants)),
                txt=text,
                created=START_MS + 3_600_000 * tid,
                mod=-1 if theme == "moderated" else int(rng.random() < 0.9),
                theme=theme,
            )
        )
    stances = [entries[i][1] for i in order.tolist()]
    votes = _votes(rng, truth, sample_comments, stances)
    return SampleConversation(
        zid=zid,
        topic=TOPIC,
        description=DESCRIPTION,
        created=START_MS,
        comments=tuple(sample_comments),
        votes=votes,
        participant_groups=tuple(truth),
        group_names=GROUP_NAMES[:groups],
    )


def _assign_groups(rng: np.random.Generator, participants: int, groups: int) -> list[int]:
    """Unequal group sizes, as in real conversations; every group gets at least one member."""
    counts = np.maximum(np.floor(np.array(_GROUP_SHARES[groups]) * participants).astype(int), 1)
    counts[0] = participants - int(counts[1:].sum())
    labels = np.repeat(np.arange(groups), counts)
    return [int(g) for g in rng.permutation(labels)]


def _votes(
    rng: np.random.Generator, truth: Sequence[int], comments: Sequence[SampleComment], stances: Sequence[str]
) -> tuple[SampleVote, ...]:
    """Each participant sees part of the comments, votes by their group's stance with a personal level
    of conviction, and now and then changes a vote."""
    visible = [i for i, c in enumerate(comments) if c.mod > -1]
    moderated = [i for i, c in enumerate(comments) if c.mod <= -1]
    votes: list[SampleVote] = []
    for pid, group in enumerate(truth):
        conviction = rng.uniform(0.7, 1.0)
        share = rng.uniform(0.35, 1.0)
        seen = max(min(_MIN_VOTES, len(visible)), round(share * len(visible)))
        picked = rng.choice(visible, size=seen, replace=False).tolist() if visible else []
        picked += [i for i in moderated if rng.random() < _MODERATED_VOTE_RATE]
        joined = START_MS + int(rng.integers(0, 7 * 86_400_000))
        for step, index in enumerate(sorted(picked)):
            comment = comments[index]
            when = max(joined, comment.created) + 60_000 * step + int(rng.integers(0, 60_000))
            vote = _draw_vote(rng, stances[index], group, conviction)
            if rng.random() < _CHANGED_VOTE_RATE:
                first = int(rng.choice([v for v in (AGREE, DISAGREE, PASS) if v != vote]))
                votes.append(SampleVote(pid, comment.tid, first, when))
                when += int(rng.integers(60_000, 3_600_000))
            votes.append(SampleVote(pid, comment.tid, vote, when))
    return tuple(sorted(votes, key=lambda v: (v.created, v.pid, v.tid)))


def _draw_vote(rng: np.random.Generator, stance: str, group: int, conviction: float) -> int:
    """Off-topic comments (no stance) draw mostly disagreement and passes from everyone."""
    if not stance:
        agree, disagree, passes = (0.1, 0.5, 0.4)
    elif set(stance) == {"a"}:
        agree, disagree, passes = _CONSENSUS_PROBABILITIES
    else:
        agree, disagree, passes = _STANCE_PROBABILITIES[stance[group]]
    mixed = [conviction * p + (1 - conviction) / 3 for p in (agree, disagree, passes)]
    return int(rng.choice([AGREE, DISAGREE, PASS], p=mixed))


def load_sample(conn: Any, sample: SampleConversation, *, report_id: str | None = None) -> None:
    """Insert the conversation into the Polis tables (conversations, comments, votes,
    votes_latest_unique, and a reports row when ``report_id`` is given) and commit."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO conversations (zid, topic, description, created) VALUES (%s, %s, %s, %s)",
            (sample.zid, sample.topic, sample.description, sample.created),
        )
        execute_values(
            cur,
            "INSERT INTO comments (tid, zid, pid, txt, created, mod, active) VALUES %s",
            [(c.tid, sample.zid, c.pid, c.txt, c.created, c.mod, True) for c in sample.comments],
        )
        execute_values(
            cur,
            "INSERT INTO votes (zid, pid, tid, vote, created) VALUES %s",
            [(sample.zid, v.pid, v.tid, v.vote, v.created) for v in sample.votes],
            page_size=1000,
        )
        execute_values(
            cur,
            "INSERT INTO votes_latest_unique (zid, pid, tid, vote, modified) VALUES %s",
            [(sample.zid, v.pid, v.tid, v.vote, v.created) for v in sample.latest_votes],
            page_size=1000,
        )
        if report_id is not None:
            cur.execute(
                "INSERT INTO reports (report_id, zid, created) VALUES (%s, %s, %s)",
                (report_id, sample.zid, sample.created),
            )
    conn.commit()
