"""Pydantic models of vitals-gateway's wire protocols and REST API.

This package imports nothing else of ours: the gateway and the device side both
depend on it, never the other way round.
"""
