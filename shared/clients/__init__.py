"""Clients of the systems the kinds ask (WHMCS, InvenTree): HTTP on the run's trusted session, the retry policy,
error model and capped reads of shared/outbound."""
