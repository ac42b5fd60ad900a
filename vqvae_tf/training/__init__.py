"""Training: the one loop (`loop`), the run options (`options`), the run directory (`workdir`),
checkpoints, and one library per stage script (`train_vqvae_lib`, `export_codes_lib`,
`train_prior_lib`, `sample_lib`). Nothing below `vqvae_tf.training` imports from here."""
