"""Beside the flow: the bank gateway and the dispatcher console, one FastAPI service."""
