"""Adapters: the Starlette and FastAPI drop-ins."""
