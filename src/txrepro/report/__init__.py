"""The report: every reproduced number beside the published one, with a verdict."""
