"""All of the app's Azure Storage access: tables and the events queue. Nothing else imports the Azure Storage SDKs.

| table      | PartitionKey       | RowKey                          | what                                     |
|------------|--------------------|---------------------------------|------------------------------------------|
| monitors   | "m"                | monitor id / "~u~{kind}~{hash}" | definitions; unique-key guard rows       |
| state      | kind               | monitor id / "{id}|ob|{event}"  | state (ETag); transactional outbox       |
| results    | "{shard}-{yyyymm}" | "{monitor id}_{inverted ticks}" | check results, newest first; and after   |
|            |                    | "{id}_{inverted hour}~{part}"   | each hour its fold row (steady checks)   |
| blocks     | "{yyyymmddhh}"     | "{shard}_{inv tick}_{run}_{n}"  | every check of a tick, packed (a day)    |
| rollups    | "{shard}-{yyyy}"   | "{monitor id}_{inverted hour}"  | hourly count/up/latency aggregates       |
|            | "h-{yyyy}"         | "{inverted hour}_{part}"        | every monitor's rollup of an hour        |
| downtimes  | monitor id         | inverted start ticks            | downtime windows                         |
| events     | "{yyyymm}"         | "{inverted ticks}_{event id}"   | every event with its delivery status     |
| deliveries | event id           | "{channel}:{recipient}"         | idempotency records per recipient        |
| meta       | "kind"             | kind                            | pause flag, last tick, watermarks        |
| ticks      | "{kind}-{yyyymm}"  | inverted ticks                  | one row per timer run (for /health)      |
| snapshots  | "{yyyymm}"         | inverted ticks (taken at)       | metric columns + explanation JSON        |
| alertrules | "r"                | rule id                         | alert rule definitions (`spec` JSON)     |
| leases     | "lease"            | lease name ("snapshot")         | single-runner leases with expiry (ETag)  |
| channels   | "c"                | channel id / "~n~{name}"        | notification channels; name guards       |
| windows    | "w"                | window id                       | maintenance windows                      |
| alerting   | concern ("ack", …) | hashed key / monitor id         | acks, groups, rate caps, escalations     |

`keys` owns every key format; `limits` the entity limits (enforced before every write); `Store` is one session,
composed of one part per table family.
"""

from __future__ import annotations

from shared.storage.alerting import AlertingTables
from shared.storage.appdata import AppData
from shared.storage.base import Conflict, StorageError, etag_of, expand_dev_storage
from shared.storage.events import EVENTS_QUEUE, POISON_QUEUE, Claim, EventsTable, event_details
from shared.storage.keys import SHARDS, from_inverted, hour_floor, inverted, months_back, unique_row
from shared.storage.limits import EntityTooLarge, check_entity, entity_size
from shared.storage.monitors import MonitorsTable
from shared.storage.results import ResultsTable
from shared.storage.snapshots import SNAPSHOT_META, SnapshotsTable
from shared.storage.state import OutboxRow, StateRow, StateTable

TABLES = ("monitors", "state", "results", "blocks", "rollups", "downtimes", "events", "deliveries", "meta", "ticks",
          "snapshots", "alertrules", "leases", "channels", "windows", "alerting")


class Store(MonitorsTable, StateTable, ResultsTable, EventsTable, SnapshotsTable, AlertingTables, AppData):
    """One storage session: open it per invocation (`async with Store.open(settings) as store`)."""


__all__ = ["EVENTS_QUEUE", "POISON_QUEUE", "SHARDS", "SNAPSHOT_META", "TABLES", "AppData", "Claim", "Conflict",
           "EntityTooLarge", "OutboxRow", "StateRow", "StorageError", "Store", "check_entity", "entity_size",
           "etag_of", "event_details", "expand_dev_storage", "from_inverted", "hour_floor", "inverted", "months_back",
           "unique_row"]
