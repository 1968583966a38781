# gradbrain: forward activations and backpropagated gradients of vision models, mapped onto fMRI and MEG.
# One rule file per stage (workflow/rules/), one script each (workflow/scripts/), one package each: docs/architecture.md;
# formulas: docs/metrics.md; data formats: docs/data-formats.md; every config key: config/README.md.


import os
import sys
from pathlib import Path

# the library, workflow/gradbrain; jobs in conda environments or on cluster nodes import it from the checkout
LIBRARY = str(Path(workflow.basedir) / "workflow")
sys.path.insert(0, LIBRARY)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, (LIBRARY, os.environ.get("PYTHONPATH"))))
)

from gradbrain.config import read_yaml  # noqa: E402

# profiles/slurm sets --replace-workflow-config, which Snakemake 9.27 does not pass on to the jobs it submits: they
# would merge config/config.yaml back into e.g. config/paper.yaml and see other datasets and models. The environment
# (which sbatch exports to the job) carries the setting to them instead.
if workflow.config_settings.replace_workflow_config:
    os.environ.update(GRADBRAIN_REPLACE_WORKFLOW_CONFIG="1")
if not (
    os.environ.get("GRADBRAIN_REPLACE_WORKFLOW_CONFIG") == "1"
    and workflow.overwrite_configfiles
):
    # a YAML syntax error named with its line (Snakemake's message has none)
    read_yaml("config/config.yaml")

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulation.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/encoding.smk"
include: "workflow/rules/hierarchy.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/power.smk"


rule all:
    default_target: True
    input:
        all_targets(),
