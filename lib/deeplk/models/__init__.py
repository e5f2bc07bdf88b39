"""The learned models, one module per family (import the module you need):

- `regression`: DHN and the 3-stage MHN (2-channel grey input, 8 corner offsets);
- `homography_net`: HomographyNet (frozen VGG19 to ``block3_conv4`` + 7 inception blocks + MLP),
  supervised and unsupervised;
- `dlkfm`: the per-level Siamese feature extractors of DLKFM and its coarse-to-fine inference;
- `clkn`: the 4-level Conditional LK Network.

Each module also provides the builders of its evaluation methods (`deeplk.methods` imports them
on first use) and reads trained weights from ``<checkpoint_dir>/<method name>/``.
"""
