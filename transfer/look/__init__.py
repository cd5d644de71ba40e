"""Look inside a trained classifier: `python -m transfer.look {ideal,adversarial,features}`."""
