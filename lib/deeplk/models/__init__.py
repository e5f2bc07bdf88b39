"""The learned models, one module per family (import the module you need):

- `regression`: DHN and the 3-stage MHN (2-channel grey input, 8 corner offsets);
- `homography_net`: HomographyNet (frozen VGG19 to ``block3_conv4`` + 7 inception blocks + MLP),
  supervised and unsupervised;
- `dlkfm`: the per-level Siamese feature extractors of DLKFM and its coarse-to-fine inference;
- `clkn`: the 4-level Conditional LK Network.

Every family module has the same shape:

- an architecture dataclass (``RegressionConfig``, ``HomographyNetConfig``, ``DLKFMConfig``,
  ``CLKNConfig``), validated on construction;
- a training task whose ``run_config()`` is what the training loop writes to the run folder's
  ``model_config.json``;
- ``STAGE_NAMES``: the stages, each named by its run folder under the checkpoint folder, the
  first part being a method name (``"dhn"``, ``"mhn/stage2"``, ``"hnet_sup/rho32"``,
  ``"dlkfm/level3"``, ``"clkn"``), and ``stage_dir(checkpoint_dir, stage)``;
- ``train_stage(stage, dataset, checkpoint_dir="checkpoints", *, steps, learning_rate, seed,
  model_config, task_options, notes, **train_options)``: one `deeplk.train.train` run (the
  keyword ``train_options`` are further `deeplk.train.TrainConfig` fields);
- ``build_method(name, checkpoint_dir=None, **options)`` with ``METHOD_DESCRIPTIONS``, which
  `deeplk.methods` calls on first use (`deeplk.methods.FAMILIES`).

Trained weights are read from the stages' folders through `deeplk.train.load_run`. Nothing here
imports `deeplk.methods`: a method built on another one (DLKFM started by MHN) receives it.
"""
