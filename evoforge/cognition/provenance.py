"""Provenance: which cognition items inspired a node, where learned ones came from, and who reused
what the node taught.

Every node records the ids of the items its Researcher saw (`nodes.cognition_ids`, in the order
shown); an insight records the node it was learnt from (`cognition.node_id`). Joining the two answers
"what inspired this node" and "which later nodes read its lessons".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from evoforge.cognition.store import CognitionItem, item_from_row
from evoforge.memory.database import Database

_ITEM_COLUMNS = "c.id, c.task, c.kind, c.title, c.content, c.source, c.node_id"


@dataclass
class NodeRef:
    """A node named in a provenance answer."""

    id: str
    name: str
    round: int
    score: float | None
    status: str


@dataclass
class SeenItem:
    """A cognition item a node's Researcher saw; for an insight, the node it was learnt from."""

    item: CognitionItem
    origin: NodeRef | None = None


@dataclass
class Provenance:
    node: NodeRef
    seen: list[SeenItem] = field(default_factory=list)
    """What the node's Researcher was shown, in order: human priors and learned insights."""
    taught: list[CognitionItem] = field(default_factory=list)
    """Insights the Analyzer learnt from this node."""
    reused_by: dict[str, list[NodeRef]] = field(default_factory=dict)
    """For each insight in `taught`: the later nodes whose Researcher saw it."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _node_ref(row: dict[str, Any], prefix: str = "") -> NodeRef:
    return NodeRef(
        id=row[f"{prefix}id"],
        name=row[f"{prefix}name"],
        round=row[f"{prefix}round"],
        score=row[f"{prefix}score"],
        status=row[f"{prefix}status"],
    )


def node_provenance(database: Database, node_id: str) -> Provenance:
    """The provenance of one node; raises LookupError when there is no such node."""
    with database.pool.connection() as conn:
        row = conn.execute(
            "SELECT id, name, round, score, status FROM nodes WHERE id = %s", (node_id,)
        ).fetchone()
        if row is None:
            raise LookupError(f"node_id: no node {node_id!r} in {database.url}")
        seen_rows = conn.execute(
            f"SELECT {_ITEM_COLUMNS}, o.id AS o_id, o.name AS o_name, o.round AS o_round, o.score AS o_score, "
            "o.status AS o_status FROM nodes n "
            "CROSS JOIN LATERAL unnest(n.cognition_ids) WITH ORDINALITY AS shown (item_id, position) "
            "JOIN cognition c ON c.id = shown.item_id LEFT JOIN nodes o ON o.id = c.node_id "
            "WHERE n.id = %s ORDER BY shown.position",
            (node_id,),
        ).fetchall()
        taught_rows = conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM cognition c WHERE c.node_id = %s ORDER BY c.created_at, c.id",
            (node_id,),
        ).fetchall()
        taught_ids = [item["id"] for item in taught_rows]
        reuse_rows = conn.execute(
            "SELECT shown.item_id, n.id, n.name, n.round, n.score, n.status FROM nodes n "
            "CROSS JOIN LATERAL unnest(n.cognition_ids) AS shown (item_id) "
            "WHERE n.cognition_ids && %s::text[] AND shown.item_id = ANY(%s) ORDER BY n.round, n.lane, n.id",
            (taught_ids, taught_ids),
        ).fetchall()
    provenance = Provenance(node=_node_ref(row))
    for seen in seen_rows:
        origin = _node_ref(seen, "o_") if seen["o_id"] is not None else None
        provenance.seen.append(SeenItem(item=item_from_row(seen), origin=origin))
    provenance.taught = [item_from_row(item) for item in taught_rows]
    provenance.reused_by = {item_id: [] for item_id in taught_ids}
    for reuse in reuse_rows:
        provenance.reused_by[reuse["item_id"]].append(_node_ref(reuse))
    return provenance


def focus_counts(database: Database, run_id: str) -> dict[str, int]:
    """How many of the run's nodes had each cognition item as their Researcher's focus (the first item shown).

    Read from `focus_uses`, which triggers keep as nodes are recorded (schema version 6): the cost follows the
    number of items, not of nodes."""
    with database.pool.connection() as conn:
        rows = conn.execute("SELECT item_id, uses FROM focus_uses WHERE run_id = %s", (run_id,)).fetchall()
    return {row["item_id"]: int(row["uses"]) for row in rows}
