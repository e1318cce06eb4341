"""The app's layers: triggers (the Functions blueprints) → manage (services the API and CLI call) → engine (ticks)
→ storage (Table Storage and the queue); notify (delivery), snapshots, rules, web (status page, badges,
Prometheus, OpenAPI); outbound (retries, errors, capped reads, the SSRF guard) and clients (WHMCS, InvenTree)."""

VERSION = "0.1.0"
