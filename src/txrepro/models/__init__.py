"""Model loading shared by studies (scGPT for age_clock and vcc).

- `torchtext_vocab`: pure-Python `torchtext.vocab` stand-in and `import_scgpt()`.
- `scgpt_checkpoint`: checkpoint folders (args.json, best_model.pt, vocab.json), sha256 checks,
  flash-attn key mapping and a loader that accounts for every tensor.
- `gene_vocab`: dataset genes -> vocabulary ids, with unmapped genes counted and a floor.

Importing this package is cheap; scgpt is imported only when a function needs it.
"""
