"""Notifier: interventions -> SMS, radio calls and webhooks, with acknowledgement and escalation."""
