"""The autoencoder's data (autoencoder.data), training graph (autoencoder.graph) and run (autoencoder.train)."""
