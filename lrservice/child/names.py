"""What a task config may name: built-in datasets, models and losses, or a plugin (no torch).

Every entry is an entry point ``"package.module:callable"``; a user's plugin is given the same
way in ``task.dataset`` / ``task.model`` / ``task.loss`` and goes through the same door
(:mod:`lrservice.child.plugins` resolves both, :mod:`lrservice.child.tasks` checks the contract).
Importing this module costs no torch, so a bad config is one line in well under a second.
"""

DATASETS = {
    "digits": "lrservice.child.data:digits",
    "mnist": "lrservice.child.data:mnist",
    "fashion_mnist": "lrservice.child.data:fashion_mnist",
    "cifar10": "lrservice.child.data:cifar10",
    "mnist1d": "lrservice.child.data:mnist1d",
    "tabular": "lrservice.child.data:tabular",
}
"""Built-in dataset loaders: ``loader(root, **dataset_args) -> {"train", "test", ...}``."""

MODELS = {
    "mlp": "lrservice.child.models:MLP",
    "lenet5": "lrservice.child.models:LeNet5",
    "resnet18": "lrservice.child.models:ResNet18",
}
"""Built-in model factories: ``factory(input_shape, num_classes, **model_args) -> nn.Module``."""

LOSSES = {
    "cross_entropy": "torch.nn.functional:cross_entropy",
}
"""Built-in losses: ``loss(outputs, targets) -> scalar tensor`` (the mean over the batch)."""
