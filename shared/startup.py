"""What function_app.py runs when it is imported: validate the settings under the Functions host.

Under the host (Core Tools and Azure set FUNCTIONS_WORKER_RUNTIME / AzureWebJobsScriptRoot in the worker) a bad or
missing setting stops the app here, with a message naming each one, before any function is registered. A tool that
only indexes the app (worker-index, an IDE) needs no settings and pays nothing for them: the settings model
(pydantic-settings) is imported on the first invocation instead, which validates them the same way. Kept free of
imports so that indexing stays cheap (a cold start on Flex Consumption imports function_app first).
"""

from __future__ import annotations

import os

HOST_MARKERS = ("FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsScriptRoot")


def under_host() -> bool:
    return any(os.environ.get(name) for name in HOST_MARKERS)


# Settings the host itself resolves in bindings (`%NAME%`): without them it cannot start those functions, whatever
# the app's defaults say.
BINDING_SETTINGS = {"CHECKS_QUEUE": "the queue of fanned-out checks (check_batch): monitor-checks with one location"}


def check_at_start() -> None:
    """Under the Functions host: raise SettingsError naming every bad setting. Elsewhere: nothing."""
    if under_host():
        from shared.settings import SettingsError, get_settings

        missing = [f"  {name}: required, {what} (see local.settings.json.example)"
                   for name, what in BINDING_SETTINGS.items() if not os.environ.get(name)]
        try:
            get_settings()
        except SettingsError as error:
            if missing:  # every problem in one message
                raise SettingsError("\n".join([str(error), *missing])) from None
            raise
        if missing:
            raise SettingsError("invalid settings:\n" + "\n".join(missing))
