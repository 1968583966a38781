"""The Natural Scenes Dataset (NSD, Allen et al. 2022) in its real file formats, one module per job.

``paths`` (where the files lie, the dataset's fixed facts; light, read when the DAG is built), ``read`` (design,
trials, image brick, betas, noise ceiling), ``rois`` (atlases and the voxel selection), ``subject`` (``load_subject``:
a subject's model-ready fMRI targets) and ``write`` (the same files from synthetic arrays, for the planted-truth
simulation and the tests: NSD may not be redistributed). Formats: docs/data-formats.md section 1.
"""
