"""Typed step contracts: per step program, the request its asset sends and the report it returns (`base.py`)."""
