"""Preference data: reading sources, mapping HH dialogues to rm-static rows, splitting."""
