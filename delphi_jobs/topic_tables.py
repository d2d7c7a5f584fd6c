"""The three topic tables the narrative reads (DESIGN 2.4); the only module that touches them.

Item shapes follow the Delphi pipeline that writes them in production:
- ``Delphi_CommentHierarchicalClusterAssignments``: conversation_id, comment_id (N), and
  ``layer{L}_cluster_id`` (N) for each layer, layer 0 the finest.
- ``Delphi_CommentClustersLLMTopicNames``: conversation_id, topic_key, layer_id, cluster_id, topic_name,
  model_name, created_at.
- ``Delphi_CommentClustersStructureKeywords``: conversation_id, cluster_key (``layer{L}_{C}``), layer_id,
  cluster_id, keywords (list of strings), size.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import query_all, to_item, to_value
from delphi_jobs.model import parse_int

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_LAYER_COLUMN = re.compile(r"^layer(\d+)_cluster_id$")
_LAYER_IN_KEY = re.compile(r"layer(\d+)")


@dataclass(frozen=True)
class ClusterAssignment:
    comment_id: int
    clusters: tuple[int, ...]
    """Cluster id per layer, index 0 = layer 0 (finest)."""

    def cluster_in(self, layer: int) -> int | None:
        return self.clusters[layer] if layer < len(self.clusters) else None


@dataclass(frozen=True)
class TopicName:
    topic_key: str
    topic_name: str
    layer_id: int | None = None
    cluster_id: int | None = None
    model_name: str = ""
    created_at: str = ""

    @property
    def layer(self) -> int | None:
        """The layer, from ``layer_id`` or, on older rows, from a ``layer{L}`` part of the key."""
        if self.layer_id is not None:
            return self.layer_id
        match = _LAYER_IN_KEY.search(self.topic_key)
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class StructureKeywords:
    cluster_key: str
    layer_id: int
    cluster_id: int
    keywords: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class TopicData:
    assignments: tuple[ClusterAssignment, ...]
    names: tuple[TopicName, ...]
    keywords: tuple[StructureKeywords, ...]


class TopicStore:
    def __init__(self, client: DynamoDBClient, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    def _query(self, table: str, conversation_id: str) -> Iterator[dict[str, Any]]:
        return query_all(
            self._client,
            {
                "TableName": table,
                "KeyConditionExpression": "#c = :c",
                "ExpressionAttributeNames": {"#c": "conversation_id"},
                "ExpressionAttributeValues": {":c": to_value(conversation_id)},
            },
        )

    def load(self, conversation_id: str) -> TopicData:
        return TopicData(
            assignments=tuple(
                _assignment(item)
                for item in self._query(self._settings.cluster_assignments_table, conversation_id)
            ),
            names=tuple(
                _topic_name(item) for item in self._query(self._settings.topic_names_table, conversation_id)
            ),
            keywords=tuple(
                _keywords(item)
                for item in self._query(self._settings.structure_keywords_table, conversation_id)
            ),
        )

    def replace(self, conversation_id: str, data: TopicData) -> None:
        """Replace a conversation's topic rows (a pipeline re-run must not leave stale topics).

        New rows are written first and only keys that are not among them are deleted afterwards, so a
        narrative job reading meanwhile sees old or new topics, never none."""
        tables = {
            self._settings.cluster_assignments_table: (
                "comment_id",
                _assignment_items(conversation_id, data),
            ),
            self._settings.topic_names_table: ("topic_key", _name_items(conversation_id, data)),
            self._settings.structure_keywords_table: ("cluster_key", _keyword_items(conversation_id, data)),
        }
        for table, (range_key, rows) in tables.items():
            items = list(rows)
            keep = {item[range_key] for item in items}
            existing = [i[range_key] for i in self._query(table, conversation_id)]
            self._batch_write(table, [{"PutRequest": {"Item": to_item(item)}} for item in items])
            stale = [
                {"DeleteRequest": {"Key": to_item({"conversation_id": conversation_id, range_key: key})}}
                for key in existing
                if key not in keep
            ]
            self._batch_write(table, stale)

    def _batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), 25):
            pending: dict[str, Any] = {table: requests[start : start + 25]}
            for attempt in range(8):
                unprocessed = self._client.batch_write_item(RequestItems=pending).get("UnprocessedItems", {})
                if not unprocessed:
                    break
                pending = unprocessed
                time.sleep(min(2.0, 0.05 * 2**attempt))
            else:
                raise RuntimeError(f"{table}: batch write left items unprocessed after retries")


def _assignment(item: Mapping[str, Any]) -> ClusterAssignment:
    layers: dict[int, int] = {}
    for name, value in item.items():
        match = _LAYER_COLUMN.match(name)
        if match and value is not None:
            layers[int(match.group(1))] = parse_int(value, name, -1)
    ordered = tuple(layers.get(i, -1) for i in range(max(layers) + 1)) if layers else ()
    return ClusterAssignment(comment_id=parse_int(item["comment_id"], "comment_id", -1), clusters=ordered)


def _optional_int(value: Any, name: str) -> int | None:
    return None if value is None else parse_int(value, name, 0)


def _topic_name(item: Mapping[str, Any]) -> TopicName:
    return TopicName(
        topic_key=str(item["topic_key"]),
        topic_name=str(item.get("topic_name", "")),
        layer_id=_optional_int(item.get("layer_id"), "layer_id"),
        cluster_id=_optional_int(item.get("cluster_id"), "cluster_id"),
        model_name=str(item.get("model_name", "")),
        created_at=str(item.get("created_at", "")),
    )


def _keywords(item: Mapping[str, Any]) -> StructureKeywords:
    raw = item.get("keywords", [])
    return StructureKeywords(
        cluster_key=str(item["cluster_key"]),
        layer_id=parse_int(item.get("layer_id"), "layer_id", 0),
        cluster_id=parse_int(item.get("cluster_id"), "cluster_id", 0),
        keywords=tuple(str(k) for k in raw) if isinstance(raw, list | tuple) else (str(raw),),
        size=parse_int(item.get("size"), "size", 0),
    )


def _assignment_items(conversation_id: str, data: TopicData) -> Iterable[dict[str, Any]]:
    for a in data.assignments:
        item: dict[str, Any] = {"conversation_id": conversation_id, "comment_id": a.comment_id}
        item.update({f"layer{layer}_cluster_id": cluster for layer, cluster in enumerate(a.clusters)})
        yield item


def _name_items(conversation_id: str, data: TopicData) -> Iterable[dict[str, Any]]:
    for n in data.names:
        yield {
            "conversation_id": conversation_id,
            "topic_key": n.topic_key,
            "topic_name": n.topic_name,
            "layer_id": n.layer_id,
            "cluster_id": n.cluster_id,
            "model_name": n.model_name or None,
            "created_at": n.created_at or None,
        }


def _keyword_items(conversation_id: str, data: TopicData) -> Iterable[dict[str, Any]]:
    for k in data.keywords:
        yield {
            "conversation_id": conversation_id,
            "cluster_key": k.cluster_key,
            "layer_id": k.layer_id,
            "cluster_id": k.cluster_id,
            "keywords": list(k.keywords),
            "size": k.size,
        }
