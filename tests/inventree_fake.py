"""A local InvenTree stand-in for the parts-list tests, built from the recorded responses in
tests/fixtures/inventree/ (a copy of ../shared/fixtures/inventree/; its README describes the data).

It serves what the recordings show, the way they show it: the same part, BOM and error bodies, DRF's two list
shapes (a plain array without `limit`, `{count, next, previous, results}` with it, `next`/`previous` as absolute
URLs with sorted query parameters and no `offset` for the first page), `?name=` (and `id__in`, `pk__in`, `id`)
ignored, `?IPN=` exact folding ASCII letters only (SQLite's LIKE: `res-4k7-öl` does not find `RES-4K7-ÖL`),
`?search=` likewise, `?name_regex=` / `?IPN_regex=` case-insensitive in any script (Python's re), `?in_bom_for=`
(every part a BOM may use: sub-parts, substitutes, allowed variants; 400 for an unknown pk), `exclude_id`,
`assembly`, `virtual`, `has_stock`, `low_stock`, `?limit=0` / `?limit=abc` as "no limit", 401 with
`WWW-Authenticate: Token` for a missing or unknown token, 404 for an unknown part, 400 for the BOM of an unknown
part. Requirements, orders and build lines are answered as recorded.

Two recording sessions (fixtures README, "Recorded later"): the default stand-in holds pk 1–128 as the later one
left them; `FakeInvenTree(session="first")` holds pk 1–12 as the first one did, since the part lists recorded then
hold only those. `test_the_fake_answers_like_the_recorded_server` replays every recorded request against the
stand-in of its session.

aiohttp.web on 127.0.0.1 in a thread of its own, so it answers whatever event loop a test runs in, and while a
test waits for a CLI subprocess. Tests change it at runtime:

    fake.set_stock(4, in_stock=20)      # part 4 now has 20 in stock (derived fields and BOM lines follow)
    fake.token = "other"                # the configured token is now unknown: 401 "Invalid token."
    fake.forbidden = True               # 403 for every authenticated request
    fake.fail_next(2, status=503)       # the next 2 API requests fail like a proxy in front of a dead server
    fake.delay = 1.0                    # answer every request that much later
    fake.stop(); fake.start()           # connection refused, then back on the same port
    fake.requests, fake.paths(), fake.max_in_flight, fake.reset_counters()
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from aiohttp import web

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "inventree"
TOKEN = "0123456789abcdef0123456789abcdef01234567"
RECORDED_BASE = "http://127.0.0.1:8123"  # where the recordings were made (in their next/previous URLs)

NO_AUTH = {"detail": "Authentication credentials were not provided."}
BAD_TOKEN = {"detail": "Invalid token."}
FORBIDDEN = {"detail": "You do not have permission to perform this action."}
NO_PART = {"detail": "No Part matches the given query."}
BAD_BOM_PART = {"part": ["Select a valid choice. That choice is not one of the available choices."]}
SUB_PART_KEYS = ("pk", "IPN", "barcode_hash", "category_default_location", "default_location", "default_expiry",
                 "name", "revision", "full_name", "description", "image", "thumbnail", "active", "locked",
                 "assembly", "component", "minimum_stock", "is_template", "purchaseable", "salable", "testable",
                 "trackable", "virtual", "units", "pricing_min", "pricing_max")


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FIRST_SESSION = 37  # index.json: its first 37 entries were recorded first (pk 1–12), the others later (README)


def later_entries() -> list[dict[str, Any]]:
    return load("index.json")[FIRST_SESSION:]


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_fold(text: str) -> str:
    """SQLite's LIKE (what `iexact` and `icontains` become there): only A–Z fold; Ö and ö stay apart."""
    return text.translate(_ASCII_LOWER)


def _positive(value: str | None) -> int | None:
    """DRF's _positive_int(strict=True) for `limit`: anything but a positive whole number means "no limit"."""
    try:
        number = int(value) if value is not None else 0
    except ValueError:
        return None
    return number if number > 0 else None


class FakeInvenTree:
    """`session`: "later" (default) serves everything recorded, pk 1–128 as the second recording session left
    them; "first" serves pk 1–12 as the first session did (the part lists recorded then hold only those)."""

    def __init__(self, session: str = "later") -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = TOKEN
        self.forbidden = False
        self.delay = 0.0
        self.lock = threading.Lock()
        self.parts: dict[int, dict[str, Any]] = {p["pk"]: p for p in load("api_part.json")}
        self.notes = {4: load("api_part_4.json")["notes"], 12: load("api_part_12.json")["notes"]}
        self.bom: list[dict[str, Any]] = load("api_bom__part-12.json") + [
            {k: v for k, v in item.items() if k != "sub_part_detail"}
            for item in load("api_bom__part-11__sub_part_detail-true.json")]
        self.substitutes = {item["pk"]: item["substitutes"] for item in load("api_bom__part-12__substitutes-true.json")}
        self.static = {("/api/part/4/requirements/", ""): load("api_part_4_requirements.json"),
                       ("/api/part/12/requirements/", ""): load("api_part_12_requirements.json"),
                       ("/api/stock/", "part=4"): load("api_stock__part-4.json"),
                       ("/api/stock/", "part=5"): load("api_stock__part-5.json"),
                       ("/api/user/me/", ""): load("api_user_me.json")}
        if session == "later":
            self._load_later()
        self._failures: list[tuple[int, str]] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path?query, Authorization)
        self.in_flight = 0
        self.max_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _load_later(self) -> None:
        """The second session's recordings: every part in them (lists and details are the same part, details
        add `notes`), the new assemblies' BOMs, and what is only ever answered as recorded (requirements, orders,
        build lines, `?uses=`)."""
        for entry in later_entries():
            body = load(entry["file"])
            path, _, query = entry["path_with_query"].partition("?")
            if entry["status"] != 200:
                continue
            if path == "/api/part/":
                for part in body if isinstance(body, list) else body.get("results", []):
                    self.parts[part["pk"]] = part
            elif re.fullmatch(r"/api/part/\d+/", path):
                self.notes[body["pk"]] = body["notes"]
                self.parts.setdefault(body["pk"], {k: v for k, v in body.items() if k != "notes"})
            elif path == "/api/bom/" and re.fullmatch(r"part=\d+", query):
                known = {item["pk"] for item in self.bom}
                self.bom += [item for item in body if item["pk"] not in known]
            elif (re.fullmatch(r"/api/part/\d+/requirements/", path) or query.startswith("uses=")
                  or not path.startswith(("/api/part/", "/api/bom/"))):
                self.static[(path, query)] = body

    # -- control -----------------------------------------------------------------------------------------

    def settings(self, **extra: str) -> dict[str, str]:
        return {"INVENTREE_URL": self.base, "INVENTREE_TOKEN": TOKEN, "INVENTREE_TIMEOUT_SECONDS": "5", **extra}

    def set_stock(self, pk: int, in_stock: float | None = None, allocated: float | None = None) -> None:
        """Change a part's stock (and/or what is allocated to build orders); what InvenTree derives follows."""
        with self.lock:
            part = self.parts[pk]
            if in_stock is not None:
                part["in_stock"] = float(in_stock)
            if allocated is not None:
                part["allocated_to_build_orders"] = float(allocated)
            part["total_in_stock"] = part["in_stock"] + part["variant_stock"]
            part["unallocated_stock"] = max(0.0, part["total_in_stock"] - part["allocated_to_build_orders"]
                                            - part["allocated_to_sales_orders"])
            for item in self.bom:  # available_stock of a BOM line = the sub-part's unallocated stock
                sub = self.parts[item["sub_part"]]
                item["available_stock"] = sub["unallocated_stock"]
                item["available_substitute_stock"] = sum(self.parts[s["part"]]["unallocated_stock"]
                                                         for s in self.substitutes.get(item["pk"], []))
                total = item["available_stock"] + item["available_substitute_stock"] + item["available_variant_stock"]
                item["can_build"] = max(0.0, (total - item["setup_quantity"])
                                        / (item["quantity"] * (1.0 + item["attrition"] / 100.0)))

    def fail_next(self, count: int, status: int = 503,
                  body: str = "<html><body><h1>503 Service Unavailable</h1></body></html>") -> None:
        with self.lock:
            self._failures = [(status, body)] * count

    def paths(self, prefix: str = "/api/") -> list[str]:
        with self.lock:
            return [p for _, p, _ in self.requests if p.startswith(prefix)]

    def reset_counters(self) -> None:
        with self.lock:
            self.requests.clear()
            self.max_in_flight = 0

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            self._loop = loop
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-inventree", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake InvenTree did not start")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    # -- the API -------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        with self.lock:
            self.requests.append((request.method, request.path_qs, request.headers.get("Authorization")))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            failure = self._failures.pop(0) if self._failures and request.path.startswith("/api/") else None
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if failure is not None:
                return web.Response(status=failure[0], text=failure[1], content_type="text/html")
            with self.lock:
                status, body, headers = self._answer(request)
            return web.json_response(body, status=status, headers=headers)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, request: web.Request) -> tuple[int, Any, dict[str, str]]:
        path = request.path
        query = {k: v[-1] for k, v in parse_qs(request.query_string, keep_blank_values=True).items()}
        if path == "/api/":
            return 200, load("api_root.json" if self._authorized(request) == "ok" else "api_root__no_auth.json"), {}
        if path == "/api/user/token/" and request.headers.get("Authorization", "").startswith("Basic "):
            return 200, load("api_user_token__basic_auth.json"), {}
        auth = self._authorized(request)
        if auth != "ok":
            return (403, FORBIDDEN, {}) if auth == "forbidden" else \
                (401, NO_AUTH if auth == "missing" else BAD_TOKEN, {"WWW-Authenticate": "Token"})
        static = self.static.get((path, request.query_string))
        if static is not None:  # answered as recorded
            return 200, copy.deepcopy(static), {}
        if path == "/api/part/":
            bom_of = query.get("in_bom_for")
            if bom_of is not None and (not bom_of.isdigit() or int(bom_of) not in self.parts):
                return 400, {"in_bom_for": BAD_BOM_PART["part"]}, {}
            bad = [pk for pk in query.get("exclude_id", "").split(",") if pk and not pk.strip().isdigit()]
            if bad:
                return 400, {"non_field_errors": [f"'{bad[0]}' is not a valid number"]}, {}
            return 200, self._page(request, query, self._part_list(query)), {}
        match = re.fullmatch(r"/api/part/(\d+)/(requirements/)?", path)
        if match:
            pk = int(match.group(1))
            if pk not in self.parts:
                return 404, NO_PART, {}
            if match.group(2):
                return 200, self._requirements(pk), {}
            return 200, self._detail(pk), {}
        if path == "/api/bom/":
            part = query.get("part")
            if part is not None and (not part.isdigit() or int(part) not in self.parts):
                return 400, BAD_BOM_PART, {}
            items = [self._bom_item(item, query) for item in self.bom
                     if part is None or item["part"] == int(part)]
            return 200, self._page(request, query, items), {}
        return 404, {"detail": "Not found."}, {}

    def _requirements(self, pk: int) -> dict[str, Any]:
        """/requirements/ of a part none was recorded for: its stock, and can_build as Part.can_build counts it."""
        part = self.parts[pk]
        lines = [i for i in self.bom if i["part"] == pk and not i["consumable"]
                 and not self.parts[i["sub_part"]]["virtual"]]
        can_build = float(int(min((i["can_build"] for i in lines), default=0.0)))
        return {"total_stock": part["total_in_stock"], "unallocated_stock": part["unallocated_stock"],
                "can_build": can_build, "ordering": part["ordering"], "building": part["building"],
                "scheduled_to_build": int(part["scheduled_to_build"]),
                "required_for_build_orders": float(part["required_for_build_orders"]),
                "allocated_to_build_orders": part["allocated_to_build_orders"],
                "required_for_sales_orders": float(part["required_for_sales_orders"]),
                "allocated_to_sales_orders": part["allocated_to_sales_orders"]}

    def _authorized(self, request: web.Request) -> str:
        header = request.headers.get("Authorization")
        if not header:
            return "missing"
        if header != f"Token {self.token}":
            return "bad"
        return "forbidden" if self.forbidden else "ok"

    def _detail(self, pk: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.parts[pk].items():
            out[key] = copy.deepcopy(value)
            if key == "name":
                out["notes"] = self.notes.get(pk)
        return out

    def _part_list(self, query: dict[str, str]) -> list[dict[str, Any]]:
        parts = list(self.parts.values())
        if "IPN" in query:  # iexact: on SQLite, LIKE, which folds ASCII letters only
            parts = [p for p in parts if ascii_fold(p["IPN"] or "") == ascii_fold(query["IPN"])]
        if "IPN_regex" in query:  # iregex: on SQLite, Python's re with (?i), so any script folds case
            pattern = re.compile(query["IPN_regex"], re.IGNORECASE)
            parts = [p for p in parts if pattern.search(p["IPN"] or "")]
        if "name_regex" in query:
            pattern = re.compile(query["name_regex"], re.IGNORECASE)
            parts = [p for p in parts if pattern.search(p["name"])]
        if query.get("in_bom_for", "").isdigit():
            wanted = self.parts_in_bom(int(query["in_bom_for"]))
            parts = [p for p in parts if p["pk"] in wanted]
        if query.get("search"):
            terms = [t for t in re.split(r"[\s,]+", query["search"]) if t]
            fields = ("name", "description", "IPN", "revision", "keywords", "category_name")
            parts = [p for p in parts if all(any(ascii_fold(t) in ascii_fold(str(p[f] or "")) for f in fields)
                                             for t in terms)]
        for flag in ("active", "assembly", "component", "virtual"):
            if query.get(flag) in ("true", "false"):
                parts = [p for p in parts if p[flag] == (query[flag] == "true")]
        if query.get("has_stock") in ("true", "false"):
            parts = [p for p in parts if (p["in_stock"] > 0) == (query["has_stock"] == "true")]
        if query.get("exclude_id"):
            excluded = {int(pk) for pk in query["exclude_id"].split(",")}
            parts = [p for p in parts if p["pk"] not in excluded]
        if query.get("low_stock") == "true":
            parts = [p for p in parts if p["minimum_stock"] > 0 and p["total_in_stock"] < p["minimum_stock"]]
        # `name` and every other unknown parameter: ignored, as the real server does
        return [copy.deepcopy(p) for p in sorted(parts, key=lambda p: (p["name"], p["pk"]))]

    def parts_in_bom(self, pk: int) -> set[int]:
        """Part.get_parts_in_bom: every line's sub-part, its substitutes and, where the line allows variants, the
        variants of both."""
        found: set[int] = set()
        for item in self.bom:
            if item["part"] != pk:
                continue
            subs = [item["sub_part"], *(s["part"] for s in self.substitutes.get(item["pk"], []))]
            found.update(subs)
            if item["allow_variants"]:
                found.update(p["pk"] for p in self.parts.values() if p.get("variant_of") in subs)
        return found

    def _bom_item(self, item: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        out = copy.deepcopy(item)
        if query.get("sub_part_detail") == "true":
            sub = self.parts[item["sub_part"]]
            detail = {k: sub.get(k) for k in SUB_PART_KEYS}
            detail["minimum_stock"] = f"{float(sub['minimum_stock']):.6f}"  # a string in nested details
            out["sub_part_detail"] = detail
        if query.get("substitutes") == "true":
            out["substitutes"] = copy.deepcopy(self.substitutes.get(item["pk"], []))
        return out

    def _page(self, request: web.Request, query: dict[str, str], items: list[Any]) -> Any:
        limit = _positive(query.get("limit"))
        if limit is None:
            return items
        try:
            offset = max(0, int(query.get("offset", "0")))
        except ValueError:
            offset = 0

        def url(**changes: int | None) -> str:
            params = {k: v for k, v in query.items()}
            for key, value in changes.items():
                if value is None:
                    params.pop(key, None)
                else:
                    params[key] = str(value)
            return f"{self.base}{request.path}?{urlencode(sorted(params.items()))}"

        nxt = url(limit=limit, offset=offset + limit) if offset + limit < len(items) else None
        if offset <= 0:
            prev = None
        elif offset - limit <= 0:
            prev = url(limit=limit, offset=None)
        else:
            prev = url(limit=limit, offset=offset - limit)
        return {"count": len(items), "next": nxt, "previous": prev, "results": items[offset:offset + limit]}


@pytest.fixture
def inventree() -> Iterator[FakeInvenTree]:
    fake = FakeInvenTree()
    fake.start()
    yield fake
    fake.stop()
