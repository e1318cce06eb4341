"""One outbound-I/O toolkit: the retry policy (retry.py), the error model and the words for network failures
(errors.py), the capped body reader (body.py), the SSRF guard (guard.py) and the HTTP sessions (http.py)."""
