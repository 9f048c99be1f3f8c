"""The agent graph as data, printed like Kafka Streams' ``Topology.describe()``.

Starting a worker needs Kafka, so the graph is not read from a running
worker: it is the declarations below (:data:`SOURCES`, :data:`TABLES`,
:data:`ROUTES`, :data:`DEAD_LETTERS`, :data:`MANIFESTS`, :data:`GLOBAL_STORE`) applied to the
real :class:`Topics` of the settings. :func:`build` refuses a graph that leaves
out a topic of ``Topics`` or an output type of the core, and the unit tests
check every declaration against the worker and ``BatchProcessor``: source
topics, tables, and the topic, key and partition of every output, dead letter
and changelog record.
"""

from __future__ import annotations

import dataclasses
import textwrap
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from paystream.ledger import (
    COMMAND_TYPES,
    Compensation,
    Confirmation,
    CreditLeg,
    DirectoryEntry,
    Event,
    JournalEntry,
    Leg,
    Output,
)
from paystream.settings import Settings
from paystream.topology.dlq import PoisonMessage
from paystream.topology.manifest import BatchManifest
from paystream.topology.topics import Topics, app_id_for

DOC_PATH_DEFAULT = Path("docs/topology.md")
DOC_WIDTH = 88

AGENT = "ledger"
"""The agent: the worker's batch loop over its sources (``paystream.agents.worker``)."""

PartitionRule: TypeAlias = Literal["murmur2(key)", "source partition"]
MURMUR2: PartitionRule = "murmur2(key)"
"""The producer's partitioner picks the partition from the key (co-partitioning)."""
SOURCE_PARTITION: PartitionRule = "source partition"
"""Written to the partition the input came from (a table's own partition)."""


@dataclass(frozen=True, slots=True)
class SourceDecl:
    """A topic the agent consumes."""

    topic: str
    """Attribute of :class:`Topics`."""
    key: str
    carries: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TableDecl:
    """A partitioned, changelog-backed RocksDB table of the agent."""

    name: str
    key: str
    changelog: str
    """Attribute of :class:`Topics`."""


@dataclass(frozen=True, slots=True)
class RouteDecl:
    """Where the agent sends one kind of record."""

    output: type
    """An output type of the core, or :class:`PoisonMessage` for dead letters."""
    topic: str
    """Attribute of :class:`Topics`."""
    key: str
    key_field: str
    """Attribute (of the output; of the input message for dead letters) that is the key."""
    partition: PartitionRule


@dataclass(frozen=True, slots=True)
class GlobalStoreDecl:
    """A store every worker fills from all partitions of a compacted topic."""

    name: str
    topic: str
    """Attribute of :class:`Topics`."""
    key: str
    reader: str


SOURCES: tuple[SourceDecl, ...] = (
    SourceDecl("commands", "source account", tuple(t.__name__ for t in COMMAND_TYPES)),
    SourceDecl("legs", "target account", tuple(t.__name__ for t in typing.get_args(Leg))),
)
TABLES: tuple[TableDecl, ...] = (
    TableDecl("balances", "account", "balances_changelog"),
    TableDecl(
        "idempotency",
        "(partner, request id) | command id | (leg, transfer id)",
        "idempotency_changelog",
    ),
    TableDecl("payouts", "payout id | source account | the partition's rules", "payouts_changelog"),
)
ROUTES: tuple[RouteDecl, ...] = (
    RouteDecl(JournalEntry, "ledger", "account", "account_id", MURMUR2),
    RouteDecl(Event, "events", "payment id", "payment_id", MURMUR2),
    RouteDecl(CreditLeg, "legs", "target account", "destination_account_id", MURMUR2),
    RouteDecl(Confirmation, "legs", "source account", "source_account_id", MURMUR2),
    RouteDecl(Compensation, "legs", "source account", "source_account_id", MURMUR2),
    RouteDecl(DirectoryEntry, "directory", "account", "account_id", SOURCE_PARTITION),
)
DEAD_LETTERS = RouteDecl(PoisonMessage, "dlq", "original key", "key", MURMUR2)
"""Poison input: the original key and value (bounded prefixes of oversized ones), with ``dlq.*``
headers saying why."""
MANIFESTS = RouteDecl(BatchManifest, "batches", "source partition", "partition", SOURCE_PARTITION)
"""One per partition of each committed batch, in its transaction: what replay needs."""
GLOBAL_STORE = GlobalStoreDecl("directory", "directory", "account", "DirectoryFollower")
"""Every worker follows all partitions of ``directory`` (read_committed)."""

NodeKind: TypeAlias = Literal["Source", "Processor", "Sink"]
Shape: TypeAlias = Literal["topic", "agent", "table"]


@dataclass(frozen=True, slots=True)
class Node:
    kind: NodeKind
    name: str
    """Unique in the topology."""
    detail: str
    shape: Shape
    ref: str
    """The diagram's node id: every source and sink of one topic share it."""
    label: str
    topic: str | None = None
    """The full topic name of a source or sink."""


@dataclass(frozen=True, slots=True)
class Edge:
    src: str
    dst: str
    label: str


@dataclass(frozen=True, slots=True)
class SubTopology:
    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str
    topics: Topics
    sub_topologies: tuple[SubTopology, ...]
    lookups: tuple[Edge, ...]
    """A processor reading a global store of another sub-topology."""

    def nodes(self) -> dict[str, Node]:
        return {node.name: node for sub in self.sub_topologies for node in sub.nodes}

    def topic_names(self) -> set[str]:
        """Every topic a source or sink of the graph reads or writes."""
        return {node.topic for node in self.nodes().values() if node.topic is not None}


def topic_attributes(topics: Topics) -> tuple[str, ...]:
    """The attributes of ``topics`` that name a topic."""
    return tuple(
        f.name for f in dataclasses.fields(topics) if isinstance(getattr(topics, f.name), str)
    )


def _topic_node(
    topics: Topics,
    kind: NodeKind,
    name: str,
    attr: str,
    key: str,
    partition: PartitionRule = MURMUR2,
    carries: tuple[str, ...] = (),
) -> Node:
    topic: str = getattr(topics, attr)
    detail = f"topic: {topic}, key: {key}"
    if partition != MURMUR2:
        detail += f", partition: {partition}"
    if carries:
        detail += f"; carries: {', '.join(carries)}"
    return Node(kind, name, detail, "topic", f"topic_{attr}", topic, topic)


def _agent_sub_topology(topics: Topics, app_id: str) -> SubTopology:
    """Sources -> agent -> tables and sinks."""
    nodes: list[Node] = []
    edges: list[Edge] = []
    for source in SOURCES:
        name = f"{source.topic}-source"
        nodes.append(
            _topic_node(topics, "Source", name, source.topic, source.key, carries=source.carries)
        )
        edges.append(Edge(name, AGENT, f"key: {source.key}"))
    stores = ", ".join(table.name for table in TABLES)
    nodes.append(
        Node(
            "Processor",
            AGENT,
            f"agent; stores: [{stores}]; global stores: [{GLOBAL_STORE.name}]",
            "agent",
            f"agent_{AGENT}",
            f"agent: {AGENT}",
        )
    )
    for table in TABLES:
        detail = f"table; key: {table.key}"
        nodes.append(
            Node("Processor", table.name, detail, "table", f"table_{table.name}", table.name)
        )
        edges.append(Edge(AGENT, table.name, "put"))
    for route in (*ROUTES, DEAD_LETTERS, MANIFESTS):
        name = "dead-letter" if route is DEAD_LETTERS else route.output.__name__
        what = "poison input" if route is DEAD_LETTERS else name
        nodes.append(_topic_node(topics, "Sink", name, route.topic, route.key, route.partition))
        edges.append(Edge(AGENT, name, f"{what}, key: {route.key}"))
    for table in TABLES:
        name = f"{table.name}-changelog"
        sink = _topic_node(topics, "Sink", name, table.changelog, table.key, SOURCE_PARTITION)
        nodes.append(sink)
        edges.append(Edge(table.name, name, f"changelog, key: {table.key}"))
    title = f"0 (app: {app_id}, partitions: {topics.partitions})"
    return SubTopology(title, tuple(nodes), tuple(edges))


def _global_sub_topology(topics: Topics) -> SubTopology:
    """The global store's topic -> its reader -> the store (Kafka Streams makes no tasks)."""
    store, reader = GLOBAL_STORE.name, GLOBAL_STORE.reader
    source = f"{GLOBAL_STORE.topic}-source"
    nodes = (
        _topic_node(topics, "Source", source, GLOBAL_STORE.topic, GLOBAL_STORE.key),
        Node(
            "Processor",
            reader,
            f"every partition, read_committed; stores: [{store}]",
            "agent",
            f"reader_{store}",
            reader,
        ),
        Node(
            "Processor",
            store,
            f"global store; key: {GLOBAL_STORE.key}; read by: {AGENT}",
            "table",
            f"table_{store}",
            f"{store} (global)",
        ),
    )
    edges = (Edge(source, reader, f"key: {GLOBAL_STORE.key}"), Edge(reader, store, "put"))
    return SubTopology("1 for global store (in every worker)", nodes, edges)


def build(settings: Settings) -> Topology:
    """The graph topics -> agent -> tables -> topics, with the settings' topic names."""
    topics = Topics.from_settings(settings)
    topology = Topology(
        prefix=settings.topic_prefix,
        topics=topics,
        sub_topologies=(
            _agent_sub_topology(topics, app_id_for(settings)),
            _global_sub_topology(topics),
        ),
        lookups=(Edge(GLOBAL_STORE.name, AGENT, "lookup"),),
    )
    _check(topology)
    return topology


def _check(topology: Topology) -> None:
    """Refuse a graph that misses a topic of ``Topics`` or an output type of the core."""
    topics = topology.topics
    wanted = {getattr(topics, attr) for attr in topic_attributes(topics)}
    if missing := wanted - topology.topic_names():
        raise ValueError(f"the topology leaves out topics {sorted(missing)}")
    routed = {route.output for route in ROUTES}
    if unrouted := set(typing.get_args(Output)) - routed:
        raise ValueError(f"no route for outputs {sorted(t.__name__ for t in unrouted)}")
    names = [node.name for sub in topology.sub_topologies for node in sub.nodes]
    if len(names) != len(set(names)):
        raise ValueError(f"node names are not unique: {names}")


def describe(topology: Topology) -> str:
    """Kafka Streams' ``TopologyDescription`` form: a line per node and per edge."""
    lines = ["Topologies:"]
    for sub in topology.sub_topologies:
        lines.append(f"   Sub-topology: {sub.title}")
        for node in sub.nodes:
            lines.append(f"    {node.kind}: {node.name} ({node.detail})")
            lines += [f"      --> {edge.dst}" for edge in sub.edges if edge.src == node.name]
            lines += [f"      <-- {edge.src}" for edge in sub.edges if edge.dst == node.name]
    return "\n".join(lines) + "\n"


_SHAPES: dict[Shape, tuple[str, str]] = {
    "topic": ('[/"', '"/]'),
    "agent": ('[["', '"]]'),
    "table": ('[("', '")]'),
}
_STYLES: dict[Shape, str] = {
    "topic": "fill:#fff4d6,stroke:#b58900",
    "agent": "fill:#dcecff,stroke:#268bd2",
    "table": "fill:#e3f5e1,stroke:#2aa198",
}


def mermaid(topology: Topology) -> str:
    """A ``flowchart LR``: topics are parallelograms, agents boxes, tables cylinders."""
    lines = ["flowchart LR"]
    nodes = topology.nodes()
    by_ref: dict[str, Node] = {}
    for node in nodes.values():
        if node.ref not in by_ref:
            by_ref[node.ref] = node
            opening, closing = _SHAPES[node.shape]
            lines.append(f"    {node.ref}{opening}{node.label}{closing}")
    for sub in topology.sub_topologies:
        for edge in sub.edges:
            src, dst = nodes[edge.src].ref, nodes[edge.dst].ref
            lines.append(f'    {src} -->|"{edge.label}"| {dst}')
    for edge in topology.lookups:
        src, dst = nodes[edge.src].ref, nodes[edge.dst].ref
        lines.append(f'    {src} -.->|"{edge.label}"| {dst}')
    for shape, style in _STYLES.items():
        lines.append(f"    classDef {shape} {style}")
        refs = ",".join(ref for ref, node in by_ref.items() if node.shape == shape)
        lines.append(f"    class {refs} {shape}")
    return "\n".join(lines) + "\n"


def saga_paragraph(topics: Topics) -> str:
    """The transfer saga's three steps, with the real topic names."""
    text = (
        "An internal transfer S -> D is a two-phase saga over two co-partitioned topics, "
        f"both keyed by account. Step 1 runs on `{topics.commands}` partition(S): the agent "
        f"`{AGENT}` claims the command id, dedupes the request id, checks D against the "
        f"`{GLOBAL_STORE.name}` global store (only what it knows is wrong is refused), checks "
        "funds in `balances`, reserves the amount (pending `DEBIT S / CREDIT transit`: S "
        "cannot close while it is pending), emits `Debited` and sends a `CreditLeg` keyed by "
        f"D to `{topics.legs}`. Step 2 runs on `{topics.legs}` partition(D), the authority "
        "on D: it journals `DEBIT transit / CREDIT D` and sends a `Confirmation`, or refuses "
        f"and sends a `Compensation`, keyed by S back to `{topics.legs}` partition(S), where "
        "step 3 posts the reservation (`Completed`) or voids it (`Reversed`). Each step's "
        "table writes, changelog records and outputs commit in one transaction with the "
        "source partition's offsets."
    )
    return textwrap.fill(text, width=DOC_WIDTH, break_on_hyphens=False, break_long_words=False)


WIRES: tuple[tuple[str, str, str], ...] = (
    ("commands", "command id's account", "Avro `schemas/command.avsc` (Confluent wire format)"),
    ("legs", "account acted on", "Avro `schemas/leg.avsc`: CreditLeg, Confirmation, Compensation"),
    ("ledger", "account", "Avro `schemas/journal_entry.avsc`: lines, phase, pending entry"),
    ("events", "payment id", "Avro `schemas/event.avsc`"),
    ("dlq", "original key", "the original bytes (a 64 KiB prefix at most), `dlq.*` headers"),
    (
        "batches",
        "source partition",
        "Avro `schemas/batch_manifest.avsc`: inputs, directory, digest",
    ),
    ("directory", "account", "struct codec `paystream.tables.codecs` (DirectoryEntry)"),
    ("balances_changelog", "account", "struct codec (Account, 128-bit totals)"),
    (
        "idempotency_changelog",
        "struct codec key",
        "struct codec (IdempotencyRecord, the partition's clock)",
    ),
    (
        "payouts_changelog",
        "kind byte + payout id, account id or none",
        "JSON `paystream.tables.payout_codecs` (Payout, PayoutProfile, ScreeningRules)",
    ),
)
"""Topic attribute, key, format. Avro for everything other systems read; struct codecs for
what only workers read (measured faster; ``paystream.tables.codecs``)."""


def wire_table(topics: Topics) -> str:
    rows = ["| topic | key | format |", "| --- | --- | --- |"]
    rows += [f"| `{getattr(topics, a)}` | {key} | {fmt} |" for a, key, fmt in WIRES]
    return "\n".join(rows) + "\n"


def markdown(topology: Topology) -> str:
    """A heading, the saga in one paragraph, the diagram and the text form."""
    return f"""# Topology

Generated by `paystream topology describe` for topic prefix `{topology.prefix}` and
{topology.topics.partitions} partitions; do not edit by hand.

{saga_paragraph(topology.topics)}

## What is on each wire

{wire_table(topology.topics)}
## Bad input

A command that cannot be decoded, fails a structural check, names a type this
version does not know, or is not on its account's partition (murmur2 of its
key, and its key is its account id) goes to `{topology.topics.dlq}` with
`dlq.reason`, `dlq.detail`, `dlq.topic`, `dlq.partition` and `dlq.offset`
headers; a value longer than 64 KiB keeps its first 64 KiB, with `dlq.size` and
`dlq.sha256` of the original. When its command id, partner and account can be
read, it is also answered `Rejected` with the reason as `code`
(`invalid_field`, `unknown_command`, `wrong_partition`). A leg that cannot be
decoded or applied stops the worker: legs are written by workers only.

## Events

Every command record gets exactly one answer: `Completed`, `Rejected` (with a
`code`), `Duplicate` (pointing at `original_payment_id`), or, for a transfer,
`Debited` and then one of `Completed` and `Reversed`. The payment's own events
have ids `<payment id>:<step>`; an answer to a record that could not claim its
command id (a repeat, a reuse, an id minted for another partition or outside the
retention window, a record on the wrong partition) has the id
`<payment id>:<step>:<partition>.<offset>` and never changes the payment.

```mermaid
{mermaid(topology)}```

```text
{describe(topology)}```
"""


def write(topology: Topology, path: Path) -> None:
    """Write :func:`markdown` to ``path``, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(topology), encoding="utf-8")
