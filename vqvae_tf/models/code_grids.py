"""The names of code grids that autoencoders and priors share (a leaf module: it imports nothing).

An autoencoder with one code grid calls it "codes" and its codes are modelled by any one-grid
prior (`ONE_GRID`, its `prior_family`); VQ-VAE-2's two levels are "codes_top" and "codes_bottom"
(also the SavedModel signatures' tensor names), modelled by the "hierarchical" prior family.
"""

ONE_GRID = "one_grid"
CODES = "codes"
LEVELS = ("top", "bottom")
GRID_NAMES = tuple(f"codes_{level}" for level in LEVELS)
