"""THINGS-EEG2 (Gifford et al. 2022): the released preprocessed EEG and its image set, one module per job.

``layout`` (file names, channels, the epoch timing, image ids; light, read when the DAG is built), ``read`` (per-image
EEG targets, the image set's images) and ``write`` (the same files from synthetic arrays, for the simulation and the
tests). Format: docs/data-formats.md section 6.
"""
