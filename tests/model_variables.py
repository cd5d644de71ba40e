"""The variable table of the toolkit's two digit networks, the one copy every test reads.

docs/ARCHITECTURE.md "Variable names": each model variable's name and shape, in creation
order. The names are the checkpoint API, so tests assert them exactly.
"""

AE_LATENT = 20

# The convolutional autoencoder (models.cae), --latent-size at its default.
AE_VARIABLES = {
    "conv1/kernel": [5, 5, 1, 16],
    "conv1/bias": [16],
    "conv2/kernel": [5, 5, 16, 32],
    "conv2/bias": [32],
    "latent_var/kernel": [1568, AE_LATENT],
    "latent_var/bias": [AE_LATENT],
    "z_matrix/kernel": [AE_LATENT, 1568],
    "z_matrix/bias": [1568],
    "dconv1/kernel": [5, 5, 16, 32],
    "dconv1/bias": [16],
    "dconv2/kernel": [5, 5, 1, 16],
    "dconv2/bias": [1],
}
# The digit classifier (models.classifier): the autoencoder's encoder, then its own head.
CLASSIFIER_VARIABLES = {
    "conv1/kernel": [5, 5, 1, 16],
    "conv1/bias": [16],
    "conv2/kernel": [5, 5, 16, 32],
    "conv2/bias": [32],
    "fc1/kernel": [1568, 200],
    "fc1/bias": [200],
    "logits/kernel": [200, 10],
    "logits/bias": [10],
}
CONV_NAMES = [name for name in CLASSIFIER_VARIABLES if name.startswith("conv")]
HEAD_NAMES = [name for name in CLASSIFIER_VARIABLES if name not in CONV_NAMES]
DECODER_NAMES = [name for name in AE_VARIABLES if name not in CONV_NAMES]


def by_scope(table):
    """{scope: {leaf: shape}} of a table, scopes and leaves in creation order."""
    scopes = {}
    for name, shape in table.items():
        scope, leaf = name.split("/")
        scopes.setdefault(scope, {})[leaf] = shape
    return scopes
