"""SAGE-net: personal-genome sequence-to-expression training (Spiro, Tu et al., bioRxiv 2025).

Steps: prepare (VCF + FASTA + genes + expression -> splits, z-scores, cached per-gene variant
matrices), PrediXcan (elastic net baseline, ranks genes), r-SAGE-net (reference CNN), p-SAGE-net
(personal sequences, initialised from r-SAGE-net), attribution, evaluate. See docs/studies/sage_net.md.
"""

STUDY = "sage_net"
