"""Options that several quantizers declare (one `Option` object each, so that a field has one
default, one type and one help everywhere). An option only one quantizer has lives in its file."""

from vqvae_tf.layers.quantizers.ops import DISTANCES, GRADIENTS
from vqvae_tf.layers.quantizers.registry import Option

COMMITMENT_COST = Option(
    "commitment_cost",
    0.25,
    "beta: weight of the commitment loss ||z_e - sg[e]||^2 (a mean over channels; bsq: over vectors, a sum over channels, as the paper).",
)
DECAY = Option("decay", 0.99, "EMA codebooks: decay of the moving averages (paper appendix A.1).")
DEAD_CODE_THRESHOLD = Option(
    "dead_code_threshold", 1.0, "Re-seed codes used less than this per step (bias-corrected EMA); 0: never."
)
KMEANS_INIT = Option("kmeans_init", True, "Initialise the codebook by k-means on the first batch.", type="bool")
DISTANCE = Option(
    "distance",
    "euclidean",
    "euclidean, or cosine (l2-normalised inputs and codes).",
    type="str",
    choices=DISTANCES,
    architecture=True,
)
GRADIENT = Option(
    "gradient",
    "straight_through",
    "straight_through, or rotation (the rotation trick).",
    type="str",
    choices=GRADIENTS,
)
ENTROPY_WEIGHT = Option("entropy_weight", None, "LFQ/BSQ: weight of the entropy penalty (default: the layer's, 0.1).")
DIVERSITY_WEIGHT = Option(
    "diversity_weight",
    None,
    "LFQ/BSQ: weight of the batch (codebook) entropy inside the penalty (default: the layer's, 1.0).",
)
ENTROPY_TEMPERATURE = Option(
    "entropy_temperature",
    None,
    "LFQ/BSQ: temperature of the soft code assignments of the entropy penalty (default: the layer's).",
)
