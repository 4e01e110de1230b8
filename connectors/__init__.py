"""The edges to other systems, one module per protocol."""
