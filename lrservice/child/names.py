"""What a task config may name: datasets and models (no torch, so config checks stay fast)."""

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "mnist1d")
MODELS = ("mlp", "lenet5", "resnet18")
