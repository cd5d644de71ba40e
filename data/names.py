"""Class names of the built-in data sets, by class id (no imports: cheap for any entry point)."""

DIGITS = tuple(str(digit) for digit in range(10))
FASHION_MNIST = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
BY_DATASET = {"mnist": DIGITS, "fashion_mnist": FASHION_MNIST}
