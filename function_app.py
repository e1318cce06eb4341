"""The table of contents: the app and its blueprints. Every trigger is one hop away.

- shared/triggers/api.py     HTTP API under /api/v1 (health, monitors, results, downtimes, uptime, run, …)
- shared/triggers/web.py     snapshots, status, history, alert rules; status page, badges, Prometheus
- shared/triggers/timers.py  one timer per check type (monitors/ registry), hourly rollups, daily retention
- shared/triggers/checks.py  queue trigger on CHECKS_QUEUE: the worker of fanned-out ticks (shared/engine/fanout.py)
- shared/triggers/mail.py    queue trigger on monitor-events → delivery; poison-queue handler → operator
- shared/triggers/alerting.py    channels: CRUD under /api/v1/channels, POST …/test
- shared/triggers/maintenance.py maintenance windows: CRUD under /api/v1/maintenance
- shared/triggers/ack.py         acknowledgements: API and the signed one-click link
- shared/triggers/digests.py     the digest timer (daily / weekly per channel)
"""

import azure.functions as func

from shared.startup import check_at_start
from shared.triggers import ack, alerting, api, checks, digests, mail, maintenance, timers, web

check_at_start()  # under the host: stop here, naming every missing or invalid setting

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(api.bp)
app.register_functions(timers.bp)
app.register_functions(mail.bp)
app.register_functions(web.bp)
for blueprint in (checks.bp, alerting.bp, maintenance.bp, ack.bp, digests.bp):
    app.register_functions(blueprint)
