"""linetwin models package (filled by later issues)."""
