"""Execution: claiming, running and recording jobs; leases, heartbeats and rescue."""
