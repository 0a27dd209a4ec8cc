"""train: data sources, the model zoo (with offline pretrained weights), the training loop, checkpoints.

Modules:

- ``data``       — data sources (ImageFolder trees, Fashion-MNIST) as decoded uint8 images and labels,
  with seeded stratified splits
- ``models``     — the model zoo: torchvision and timm classifiers, the offline-pretrained
  EfficientNet-Lite0, layer groups and head for transfer learning
- ``pretrained`` — ``edge pretrained``: a run holding an ImageNet-pretrained checkpoint, no training
- ``config``     — the training configuration: defaults, presets, explicit flags, validation, resume
- ``augment``    — augmentation presets, training and evaluation datasets, the batch order per rank
- ``loop``       — the training loop (``train(config)``, ``Trainer``): epochs, steps, early stopping, Ctrl-C
- ``schedule``   — what trains and how fast: optimizer groups, warmup + cosine, unfreezing per mode
- ``evaluate``   — loss, top-1, top-5 and the confusion matrix on a split, through ``spec.apply``
- ``run_checkpoints`` — the run's checkpoint.pt and last.pt with their manifests; ``--resume``
- ``distributed`` — this process's place in a ``torchrun`` job
- ``checkpoint`` — writing checkpoints and rebuilding their model (reading is ``edge.checkpoints``)
- ``report``     — metrics CSV/JSON, curves and confusion PNGs, the closing diagnosis, the terminal's
  progress bar, epoch lines and tables
- ``cli``        — ``edge train``: arguments (grouped as in ``--help``) and the run
- ``throughput_benchmark`` — ``python -m train.throughput_benchmark``: the training loop's images/s
  against a bare forward/backward loop

Top-1 and top-5 are percentages (0-100) in every metric, file and message. train imports the core
(``edge`` spec, atomic, manifest, run, checkpoints, errors) and ``edge.inspect``, never bench, calibration
or another edge stage.
"""
