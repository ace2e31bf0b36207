"""The comparison domain: every policy against SFT in one table."""
