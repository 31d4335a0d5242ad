"""The child network whose learning rate is controlled: data, models, training loop. No Ray.

Import from the submodules (``lrservice.child.trainer``, ``.data``, ``.features``, ...). This
package imports nothing, so ``lrservice.child.names`` (what a config may name) costs no torch.
"""
