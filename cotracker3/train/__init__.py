"""The training recipe: how the CoTracker3 models of this project are made.

Modules, each depending only on those above it and on the inference core:

* :mod:`~cotracker3.train.losses`: the reference's losses (tracks, visibility, confidence);
* :mod:`~cotracker3.train.augment`: the reference's augmentations of a clip;
* :mod:`~cotracker3.train.loop`: supervised training on the synthetic engine, resumable;
* :mod:`~cotracker3.train.pseudo_label`: fine-tuning on unlabelled real videos from teacher tracks;
* :mod:`~cotracker3.train.export`: calibrating, evaluating and writing a run as the embedded model.

Nothing in the inference core (:mod:`cotracker3.model`, :mod:`~cotracker3.predictor`,
:mod:`~cotracker3.weights`, :mod:`~cotracker3.embedded`) imports this package.
"""
