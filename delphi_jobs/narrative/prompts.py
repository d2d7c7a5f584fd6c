"""Prompts for narrative sections and the Anthropic request parameters (DESIGN 2.4).

The wording lives in ``templates/*.txt`` (package data) so it can be revised without touching code.
Each comment is rendered on one line as
``<comment id="{tid}" agrees="{a}" disagrees="{d}" passes="{p}">{text}</comment>`` followed by one
line of per-group votes; the loopback fake finds the citable ids by that opening form. All
participant text is escaped and flattened to one line, so a comment cannot forge another's line.
"""

from __future__ import annotations

import functools
import html
from importlib import resources
from string import Template
from typing import Any

from delphi_jobs.narrative.conversation import Comment, ConversationData
from delphi_jobs.narrative.sections import Section, SectionPlan

DEFAULT_MAX_TOKENS = 4096


@functools.cache
def _template(name: str) -> str:
    path = resources.files("delphi_jobs.narrative").joinpath("templates", name)
    return path.read_text(encoding="utf-8").strip()


def _text(value: str) -> str:
    """Element text: whitespace runs (newlines and Unicode line separators too) become one space."""
    return html.escape(" ".join(value.split()), quote=False)


def _attribute(value: str) -> str:
    return html.escape(" ".join(value.split()), quote=True)


def comment_line(comment: Comment) -> str:
    v = comment.votes
    return (
        f'<comment id="{comment.tid}" agrees="{v.agrees}" disagrees="{v.disagrees}" '
        f'passes="{v.passes}">{_text(comment.text)}</comment>'
    )


def group_votes_line(comment: Comment) -> str:
    """The comment's votes per opinion group; empty when the math run had no groups."""
    if not comment.group_votes:
        return ""
    groups = "".join(
        f'<group id="{g.group_id}" agrees="{g.votes.agrees}" disagrees="{g.votes.disagrees}" '
        f'passes="{g.votes.passes}"/>'
        for g in comment.group_votes
    )
    return f'<group-votes comment="{comment.tid}">{groups}</group-votes>'


def system_prompt() -> str:
    return _template("system.txt")


MAX_DESCRIPTION = 2000
"""The description is repeated in every section's prompt; Polis allows 50,000 characters."""


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def user_prompt(data: ConversationData, section: Section) -> str:
    lines: list[str] = []
    for comment in section.comments:
        lines.append(comment_line(comment))
        group_line = group_votes_line(comment)
        if group_line:
            lines.append(group_line)
    groups = "".join(f'<group id="{g.group_id}" members="{g.members}"/>' for g in data.groups)
    return Template(_template("user.txt")).substitute(
        topic=_text(data.topic),
        description=_text(_shorten(data.description, MAX_DESCRIPTION)),
        group_count=len(data.groups),
        groups=groups,
        title=_attribute(section.title),
        purpose=_template(f"purpose_{section.kind.value}.txt"),
        comments="\n".join(lines),
        section_id=section.name,
        id_count=len(section.comments),
    )


def request_params(
    data: ConversationData, section: Section, *, model: str, max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """Message parameters for one batch request. No temperature, top_p or top_k: newer API versions
    reject them, and the defaults suit a factual summary."""
    return {
        "model": model,
        "max_tokens": max_tokens,
        "system": system_prompt(),
        "messages": [{"role": "user", "content": user_prompt(data, section)}],
    }


def batch_requests(
    data: ConversationData, plan: SectionPlan, *, model: str, max_tokens: int = DEFAULT_MAX_TOKENS
) -> list[dict[str, Any]]:
    """The ``requests`` list of a Message Batches create call, in plan order."""
    return [
        {"custom_id": s.custom_id, "params": request_params(data, s, model=model, max_tokens=max_tokens)}
        for s in plan.sections
    ]
