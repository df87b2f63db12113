"""GPO-VAE (Baek et al., Bioinformatics 2025): a GRN-aligned perturbation VAE, its CausalBench-style
preprocessing, average-treatment-effect metrics and GRN evaluation."""
