"""txrepro: re-runs published transcriptome-AI studies and sets every number beside the published one."""

__version__ = "0.1.0"

STUDY_IDS: tuple[str, ...] = ("age_clock", "gpo_vae", "vcc", "sage_net", "drugseq")
