"""THINGS-MEG (OpenNeuro ds004212, Hebart et al. 2023) and the THINGS images, one module per job.

``layout`` (file names, channels, metadata columns, the epoch timing; light, read when the DAG is built), ``read``
(per-image MEG targets, the THINGS images) and ``write`` (the same files from synthetic arrays, for the simulation and
the tests). Formats: docs/data-formats.md sections 2 and 3.
"""
