"""MNIST-format data sets: strict readers, source order and tf.data input."""
