"""linetwin api package (filled by later issues)."""
