"""Notifications: channels (channel.py; e-mail in email.py), rendering (render.py, templates/), the delivery
pipeline (pipeline.py) and what happens when it gives up (poison.py)."""

from shared.notify.channel import Channel, Notification, NotifyError, PermanentError, TransientError, message_id
from shared.notify.email import EmailChannel
from shared.notify.pipeline import DeliveryDeferred, deliver, recipients_for
from shared.notify.poison import handle_poison
from shared.notify.render import MAX_DEQUEUE_COUNT, Rendered, render_event, render_notice

__all__ = ["MAX_DEQUEUE_COUNT", "Channel", "DeliveryDeferred", "EmailChannel", "Notification", "NotifyError",
           "PermanentError", "Rendered", "TransientError", "deliver", "handle_poison", "message_id",
           "recipients_for", "render_event", "render_notice"]
