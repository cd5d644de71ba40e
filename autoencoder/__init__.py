"""The autoencoder's training graph (autoencoder.graph) and its run (autoencoder.train)."""
