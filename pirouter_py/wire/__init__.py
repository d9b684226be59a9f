"""Wire formats: one module per protocol, each decoding and encoding both directions."""
