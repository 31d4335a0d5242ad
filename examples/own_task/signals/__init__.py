"""A user's own task for lrservice: waveform classification with a 1-D conv net.

Nothing here is part of lrservice: it is the kind of package a user writes, named from a
config by entry point (``signals.data:load``, ``signals.model:ConvNet1d``).
"""
