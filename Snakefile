# gradbrain: forward activations and backpropagated gradients of vision models, mapped onto fMRI and MEG.
# Stages and the files between them: ../DESIGN.md (shipped as docs/design.md); every config key: config/README.md.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/brain.smk"
include: "workflow/rules/encoding.smk"
include: "workflow/rules/hierarchy.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
