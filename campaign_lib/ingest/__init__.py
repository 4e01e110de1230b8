"""The data phase: source files and API batches become standardised source records."""
