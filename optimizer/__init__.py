"""linetwin optimizer package (filled by later issues)."""
