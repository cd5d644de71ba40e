"""Scope names of the two models: part of the checkpoint format (docs/ARCHITECTURE.md,
"Variable names"), kept free of TensorFlow imports."""

ENCODER_SCOPES = ("conv1", "conv2")
DECODER_SCOPES = ("latent_var", "z_matrix", "dconv1", "dconv2")
AUTOENCODER_SCOPES = ENCODER_SCOPES + DECODER_SCOPES
HEAD_SCOPES = ("fc1", "logits")
CLASSIFIER_SCOPES = ENCODER_SCOPES + HEAD_SCOPES
