"""The learned models, one module per family (import the module you need):

- `regression`: DHN and the 3-stage MHN (2-channel grey input, 8 corner offsets);
- `homography_net`: HomographyNet (frozen VGG19 to ``block3_conv4`` + 7 inception blocks + MLP),
  supervised and unsupervised;
- `dlkfm`: the per-level Siamese feature extractors of DLKFM and its coarse-to-fine inference;
- `clkn`: the 4-level Conditional LK Network.

Every family module has the same shape: a training task (``run_config()`` is what the training
loop writes to the run folder's ``model_config.json``), a ``train_stage``, and
``build_method(name, checkpoint_dir=None, **options)`` with ``METHOD_DESCRIPTIONS``, which
`deeplk.methods` calls on first use (`deeplk.methods.FAMILIES`). Trained weights are read from
``<checkpoint_dir>/<method name>/`` through `deeplk.train.load_run`. Nothing here imports
`deeplk.methods`: a method built on another one (DLKFM started by MHN) receives it.
"""
