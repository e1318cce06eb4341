"""The table of contents: the app and its blueprints. Every trigger is one hop away.

- shared/blueprints/api.py     HTTP API under /api/v1 (health, monitors, results, downtimes, uptime, run, …)
- shared/blueprints/timers.py  one timer per check type (monitors/ registry), hourly rollups, daily retention
- shared/blueprints/mail.py    queue trigger on monitor-events → e-mail; poison-queue handler → admin
- shared/blueprints/public.py  snapshots, status, history, alert rules; status page, badges, Prometheus
"""

import azure.functions as func

from shared.blueprints import api, mail, public, timers
from shared.settings import check_at_start

check_at_start()  # under the host: stop here, naming every missing or invalid setting

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(api.bp)
app.register_functions(timers.bp)
app.register_functions(mail.bp)
app.register_functions(public.bp)
