"""The faces: the public status page and badges (anonymous), Prometheus metrics and the OpenAPI document."""
