"""Training: options (``config``), the resumable training loop (``loop``), its callbacks, weight averaging, precise
BatchNorm statistics and distribution strategies. ``mtunet.train`` and ``mtunet.TrainConfig`` are the public API."""
