"""Conditions into Kopf's patch, and their changes announced as Kubernetes Events.

Every writer of a Webhook's conditions (the reconcile's stages, webhook_seen) goes through
``write_conditions``: the new list is merged over what this handler already wrote (else status), the
transition times kept, and each change posted once as an Event (rules/status.announcements).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from hookline.api import Condition
from hookline.operator.rules.status import Announcement, announcements, merge_conditions
from hookline.timestamps import rfc3339


def post(body: Any, announcement: Announcement) -> None:
    kopf.event(body, type=announcement.kind, reason=announcement.reason, message=announcement.message)


def write_conditions(
    body: Any,
    status: Mapping[str, Any],
    patch: kopf.Patch,
    updates: Sequence[Condition],
    generation: int | None,
) -> None:
    before = patch.status.get("conditions") or status.get("conditions")
    after = merge_conditions(before, updates, generation=generation, now=rfc3339())
    if after != list(before or []):
        patch.status["conditions"] = after
        for announcement in announcements(before, after):
            post(body, announcement)
