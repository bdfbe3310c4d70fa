"""Telling humans that an approval waits for them: signed webhooks.

The notifier attaches to Approvals.on_created; it never decides anything
and never delays an escalation (deliveries run as tasks of their own)."""

from enforcer.notify.signature import sign, verify_signature
from enforcer.notify.webhook import WebhookNotifier

__all__ = ["WebhookNotifier", "sign", "verify_signature"]
