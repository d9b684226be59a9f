"""Learning from the owner's traffic: labelled examples, training (`pirouter learn`, with the
optional `learn` extra), and evaluation (`pirouter eval`). Inference lives in routing/learned."""
