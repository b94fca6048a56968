"""Multiply-accumulates and parameters of a network, per layer: the cost TransTailor prunes against.

"FLOPs" here, as in the pruning papers, are multiply-accumulates of the convolutions and dense layers at
one input size, batch 1 (BatchNorm, activations, pooling and additions are not counted):

    Conv2D           H_out * W_out * k_h * k_w * (C_in / groups) * C_out
    DepthwiseConv2D  H_out * W_out * k_h * k_w * C_in * depth_multiplier
    Dense            C_in * C_out
"""

import keras

from models.adafilter.replay import graph_nodes


def layer_macs(layer, input_shape, output_shape):
    """Multiply-accumulates of one layer for one image (0 for layers without a kernel)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return int(output_shape[1] * output_shape[2] * kh * kw * input_shape[-1] * layer.depth_multiplier)
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return int(output_shape[1] * output_shape[2] * kh * kw * (input_shape[-1] // layer.groups) * layer.filters)
    if isinstance(layer, keras.layers.Dense):
        return int(input_shape[-1] * layer.units)
    return 0


def macs_by_layer(model, image_size, channels=3):
    """{layer name: multiply-accumulates} for one `image_size` x `image_size` image (nested models walked)."""
    table = {}
    _walk(model, (1, int(image_size), int(image_size), channels), table, "")
    return table


def count_macs(model, image_size):
    """Total multiply-accumulates of `model` for one image."""
    return int(sum(macs_by_layer(model, image_size).values()))


def _walk(model, input_shape, table, prefix):
    shapes = {id(model.inputs[0]): tuple(input_shape)}
    for node in graph_nodes(model):
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        in_shapes = [shapes[id(t)] for t in node.input_tensors]
        first = in_shapes[0]
        if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"):
            out = _walk(layer, first, table, f"{prefix}{layer.name}/")
        else:
            out = layer.compute_output_shape(first if len(in_shapes) == 1 else in_shapes)
            sublayers = [s for s in layer._flatten_layers(include_self=False, recursive=True)] if hasattr(layer, "_flatten_layers") else []
            if sublayers and not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
                # a custom layer (stem, head): its kernels, at its output resolution (our approximation)
                for sub in sublayers:
                    if isinstance(sub, (keras.layers.Conv2D, keras.layers.Dense)):
                        sub_in = (*out[:-1], sub.kernel.shape[-2] * getattr(sub, "groups", 1)) if isinstance(sub, keras.layers.Conv2D) else (1, sub.kernel.shape[0])
                        sub_out = (*out[:-1], sub.filters) if isinstance(sub, keras.layers.Conv2D) else (1, sub.units)
                        if isinstance(sub, keras.layers.DepthwiseConv2D):
                            sub_in = (*out[:-1], sub.kernel.shape[-2])
                        table[f"{prefix}{layer.name}/{sub.name}"] = layer_macs(sub, sub_in, sub_out)
            else:
                table[f"{prefix}{layer.name}"] = layer_macs(layer, first, out)
        outs = out if isinstance(out, list) else [out]
        for tensor, shape in zip(node.output_tensors, outs):
            shapes[id(tensor)] = tuple(shape)
    return shapes[id(model.outputs[0])]
