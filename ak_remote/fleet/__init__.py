"""Machines: agent command lines, queues, workers and the health check.

Commands `agent`, `queues`, `agents` and `doctor` (click layer: `ak_remote.commands.fleet`).
"""
