"""Models of a run: the batched engine, which subsets they see, and every retrained model.

    architectures  K networks as one batched module (MLP, small CNN, ResNet-9)
    engine         the batched training loop and margins on every target
    mlp_step       the MLP's training step by hand: biases inside five batched GEMMs, one fused SGD update, no autograd
    seeds          every named seed stream, and the seeds drawn from them
    subsets        each model's training subset, from (run seed, model index)
    train_stage    the `train`/`merge` stage: resumable shards, the manifest
    target_stats   each target's mean margin and accuracy over the run's models
    retraining     new models with the run's own recipe on chosen training sets
    retrain_store  the one store of retrained models, keyed by request and topped up by seed index
    control        control models (full training set): the store's empty request, kept in control_*.npy
"""
