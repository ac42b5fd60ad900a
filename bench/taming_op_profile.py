r"""Where the "taming" decoder's time goes in TF's graph executor: op types by time, one traced call.

    python -m bench.taming_op_profile                      # LDM VQ-f4 widths, 256x256, batch 1
    python -m bench.taming_op_profile --size=128 --batch=4

Builds the zoo's VQVAE with the taming network at the LDM VQ-f4 first stage's widths (128, 256,
512; 2 ResNet blocks per level, mid attention; random weights), times `decode` as a tf.function
(median of `--repeats` calls after one), then runs the same graph once more in a v1 session with
FULL_TRACE and sums the ops' times by type (2 intra-op and 2 inter-op threads, as the tokenizer
benchmark). BENCHMARKS.md section 13 gives its figures before and after the GroupNorm rewrite.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from vqvae_tf import VQVAE

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    options = dict(block_out_channels=[128, 256, 512], layers_per_block=2, latent_channels=3, mid_attention=True)
    model = VQVAE(image_shape=(args.size, args.size, 3), num_embeddings=8192, embedding_dim=3, downsample=4,
                  network="taming", network_options=options, kmeans_init=False)  # fmt: skip
    grid = args.size // 4
    codes = tf.zeros([args.batch, grid, grid], tf.int32)
    decode = tf.function(lambda c: model.decode(c))
    concrete = decode.get_concrete_function(tf.TensorSpec([args.batch, grid, grid], tf.int32))
    decode(codes)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        decode(codes).numpy()
        times.append((time.perf_counter() - start) * 1000)

    frozen = convert_variables_to_constants_v2(concrete)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=2)
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        feed = {frozen.inputs[0].name: codes.numpy()}
        session.run(frozen.outputs[0].name, feed)
        trace = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        metadata = tf.compat.v1.RunMetadata()
        session.run(frozen.outputs[0].name, feed, options=trace, run_metadata=metadata)
    by_type = collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            label = node.timeline_label
            op = label.split("=")[-1].split("(")[0].strip() if "=" in label else node.node_name
            by_type[op] += node.all_end_rel_micros / 1000
    total = sum(by_type.values())
    print(
        json.dumps(
            {
                "decode_ms_median": round(statistics.median(times), 1),
                "traced_ms_by_op": {k: [round(v, 1), f"{100 * v / total:.1f}%"] for k, v in by_type.most_common(12)},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
