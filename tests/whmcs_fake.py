"""A local WHMCS stand-in: `includes/api.php` answering `GetProducts` as WHMCS documents it, on 127.0.0.1.

aiohttp.web in its own thread (so it serves async tests and CLI subprocesses alike). It checks the API
credentials like WHMCS does, filters by `pid` (a comma list), and answers in the documented shape:

    {"result": "success", "totalresults": N, "products": {"product": [{"pid": 1, "gid": 1, "type": ...,
     "name": ..., "description": ..., "module": ..., "paytype": ..., <stock fields>, "pricing": {...},
     "customfields": {"customfield": []}, "configoptions": {"configoption": []}}]}}

Stock fields per product `style`:
    "modern"  8.12+: "quantity_available": 12 (and "allowqty")
    "legacy"  older releases, numbers as strings: "pid": "12", "stockcontrol": "true", "stocklevel": "12"
    "none"    no stock control: neither field (legacy), or "stockcontrol": false with `explicit_off`

Switches: `single_object = True` sends `"product": {...}` instead of a list when one product matches;
`keyed_object = True` sends the products as an object keyed "0", "1", … (`"product": {"0": {...}, "1": {...}}`):
a PHP array serialised as an object, which json_encode does when the keys are not exactly 0…n-1 — here each key is
the product's position in the whole catalogue, so a `pid` filter leaves gaps ("0", "2");
`empty = ""` / `"missing"` is how "no products" looks. `fail(mode, times=None)` makes the next `times`
requests (all, when None) fail: "auth" (200 + {"result":"error","message":"Authentication Failed"}),
"auth403" (the same with HTTP 403), "ip" (403, "Invalid IP 203.0.113.9"), "500", "503", "html" (200, a
non-JSON page), "slow" (waits `delay` seconds first, then answers normally), "echo" (an error that repeats
the secret it was sent, to prove the client scrubs it). Every request's form is kept in `requests`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

IDENTIFIER = "D4xTqFakeIdentifier"
SECRET = "whmcs-Secr3t-7c1d9a4e5b"  # distinctive, so a leak is easy to find
ACCESS_KEY = "acc3ss-K3y-51f0e2"


@dataclass
class Product:
    pid: int
    name: str
    quantity: int | None
    style: str = "modern"  # modern | legacy | none
    explicit_off: bool = False
    gid: int = 1

    def wire(self) -> dict[str, Any]:
        legacy = self.style in ("legacy", "none")
        num = (lambda v: str(v)) if legacy else (lambda v: v)
        item: dict[str, Any] = {"pid": num(self.pid), "gid": num(self.gid), "type": "server", "name": self.name,
                                "slug": self.name.lower().replace(" ", "-"),
                                "product-url": f"https://whmcs.example/store/vps/{self.pid}",
                                "description": f"{self.name}, with all the bells and whistles.",
                                "module": "autorelease", "paytype": "recurring"}
        if self.style == "modern":
            item["allowqty"] = 0
            item["quantity_available"] = self.quantity
        elif self.style == "legacy":
            item["stockcontrol"] = "true"
            item["stocklevel"] = str(self.quantity)
        elif self.explicit_off:
            item["stockcontrol"] = False
        item["pricing"] = {"USD": {"prefix": "$", "suffix": " USD", "msetupfee": "0.00", "qsetupfee": "0.00",
                                   "ssetupfee": "0.00", "asetupfee": "0.00", "bsetupfee": "0.00",
                                   "tsetupfee": "0.00", "monthly": "9.99", "quarterly": "-1.00",
                                   "semiannually": "-1.00", "annually": "99.00", "biennially": "-1.00",
                                   "triennially": "-1.00"}}
        item["customfields"] = {"customfield": []}
        item["configoptions"] = {"configoption": []}
        return item


@dataclass
class WhmcsFake:
    identifier: str = IDENTIFIER
    secret: str = SECRET
    access_key: str | None = None  # when set, requests must carry it as `accesskey`
    products: dict[int, Product] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    single_object: bool = False
    keyed_object: bool = False
    empty: str = "missing"  # how "nothing matched" looks: "missing" (no `products` key) or "" (empty string)
    delay: float = 2.0
    url: str = ""
    _failure: str | None = None
    _fail_left: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- control ---------------------------------------------------------------------------------------------

    def add(self, pid: int, name: str, quantity: int | None, style: str = "modern", **extra: Any) -> Product:
        product = self.products[pid] = Product(pid, name, quantity, style, **extra)
        return product

    def set(self, pid: int, quantity: int) -> None:
        self.products[pid].quantity = quantity

    def remove(self, pid: int) -> Product:
        return self.products.pop(pid)

    def fail(self, mode: str | None, times: int | None = None) -> None:
        with self._lock:
            self._failure, self._fail_left = mode, times

    def settings(self, **extra: str) -> dict[str, str]:
        values = {"WHMCS_API_URL": self.url, "WHMCS_IDENTIFIER": self.identifier, "WHMCS_SECRET": self.secret,
                  "WHMCS_TIMEOUT_SECONDS": "5"}
        if self.access_key:
            values["WHMCS_ACCESS_KEY"] = self.access_key
        values.update(extra)
        return values

    # -- the API ---------------------------------------------------------------------------------------------

    def _take_failure(self) -> str | None:
        with self._lock:
            if self._failure is None:
                return None
            mode = self._failure
            if self._fail_left is not None:
                self._fail_left -= 1
                if self._fail_left <= 0:
                    self._failure = self._fail_left = None
            return mode

    async def _api(self, request: web.Request) -> web.StreamResponse:
        form = dict(await request.post())
        self.requests.append({k: str(v) for k, v in form.items()})
        mode = self._take_failure()
        if mode == "slow":
            await asyncio.sleep(self.delay)
        elif mode == "auth":
            return web.json_response({"result": "error", "message": "Authentication Failed"})
        elif mode == "auth403":
            return web.json_response({"result": "error", "message": "Authentication Failed"}, status=403)
        elif mode == "ip":
            return web.json_response({"result": "error", "message": "Invalid IP 203.0.113.9"}, status=403)
        elif mode in ("500", "503"):
            return web.Response(status=int(mode), text="<html><body><h1>Service Unavailable</h1></body></html>",
                                content_type="text/html")
        elif mode == "html":
            return web.Response(text="<html><body>WHMCS Admin Login</body></html>", content_type="text/html")
        elif mode == "echo":
            return web.json_response({"result": "error", "message": f"Invalid secret {form.get('secret')}"})

        if form.get("identifier") != self.identifier or form.get("secret") != self.secret \
                or (self.access_key and form.get("accesskey") != self.access_key):
            return web.json_response({"result": "error", "message": "Authentication Failed"}, status=403)
        if form.get("responsetype") != "json":
            return web.Response(text="<?xml version=\"1.0\"?><whmcsapi/>", content_type="text/xml")
        if form.get("action") != "GetProducts":
            return web.json_response({"result": "error", "message": "Command Not Found"})

        wanted = {int(p) for p in str(form.get("pid", "")).split(",") if p.strip().isdigit()}
        catalogue = sorted(self.products.items())
        keyed = {str(n): p.wire() for n, (pid, p) in enumerate(catalogue) if not wanted or pid in wanted}
        items = list(keyed.values())
        reply: dict[str, Any] = {"result": "success", "totalresults": len(items)}
        if items:
            product: Any = items
            if self.single_object and len(items) == 1:
                product = items[0]
            elif self.keyed_object:
                product = keyed
            reply["products"] = {"product": product}
        elif self.empty == "":
            reply["products"] = ""
        return web.Response(text=json.dumps(reply), content_type="application/json")

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/includes/api.php", self._api)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{port}/includes/api.php"
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="whmcs-fake", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the WHMCS stand-in did not start")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def whmcs() -> Iterator[WhmcsFake]:
    fake = WhmcsFake()
    fake.start()
    yield fake
    fake.stop()
