"""atmguard: stops phone-coached scams at ATMs while they happen.

Data flows detectors -> stream (engine) -> rules -> notifier; the gateway (bank API and
dispatcher console) and the case store sit beside the flow.
"""

__version__ = "0.1.0"
