"""The Functions blueprints — thin adapters from triggers to services: api (HTTP /api/v1), web (snapshots, rules,
status page, badges, Prometheus), timers (one per kind, rollup, retention, snapshot), mail (the events queue)."""
