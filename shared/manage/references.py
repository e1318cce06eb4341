"""What a monitor definition refers to, checked when it is written: the channels it names exist, the monitors it
depends on exist and do not make a cycle. A 422 names the field and the missing name or id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.errors import Invalid

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from shared.storage import Store


async def check_references(store: Store, cfg: MonitorBase) -> None:
    problems = []
    if cfg.channels:
        from shared.manage.channels import channel_names

        known = await channel_names(store)
        for n, name in enumerate(cfg.channels):
            if name not in known:
                problems.append({"field": f"channels.{n}", "message": f"no channel named {name!r} "
                                 "(GET /api/v1/channels lists them)"})
    if cfg.depends_on:
        from shared.manage.dependencies import dependency_problems

        problems += await dependency_problems(store, cfg)
    problems += location_problems(cfg)
    if problems:
        raise Invalid("the monitor refers to something that does not exist", problems)


def location_problems(cfg: MonitorBase) -> list[dict[str, str]]:
    """The locations it lists are the deployment's (CHECK_LOCATIONS), and its quorum fits them."""
    from shared.settings import get_settings

    listed, quorum = getattr(cfg, "locations", None), getattr(cfg, "quorum", None)
    everywhere = get_settings().locations or (get_settings().check_location or "default",)
    problems = [{"field": f"locations.{n}", "message": f"no location named {name!r} (CHECK_LOCATIONS: "
                 f"{', '.join(everywhere)})"} for n, name in enumerate(listed or []) if name not in everywhere]
    count = len(listed or everywhere)
    if quorum and quorum > count and not problems:
        problems.append({"field": "quorum", "message": f"{quorum} is more than its {count} location(s)"})
    return problems
