"""vcc: the Virtual Cell Challenge 2025 student project (cell-mean, ridge, random forest; STATE and
scGPT plug into the same predictor registry) scored with the official cell-eval metrics and with
the project's own evaluator that produced the published table."""
