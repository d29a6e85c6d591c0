"""Compare two TF checkpoints: variable keys, shapes, dtypes and the object graph's node paths.

PY scripts/xstack/compare_keys.py CKPT_A CKPT_B
"""

import sys

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2


def describe(prefix):
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    paths, stack = {}, [(0, "", (0,))]
    while stack:  # every path from the root (a node reachable twice appears under both)
        node_id, path, ancestors = stack.pop()
        paths[path] = node_id
        for child in graph.nodes[node_id].children:
            if child.node_id not in ancestors:
                name = f"{path}/{child.local_name}" if path else child.local_name
                stack.append((child.node_id, name, ancestors + (child.node_id,)))
    slots = sum(len(n.slot_variables) for n in graph.nodes)
    variables = {k: (tuple(shapes[k]), dtypes[k].name) for k in shapes if k != "_CHECKPOINTABLE_OBJECT_GRAPH"}
    return variables, set(paths), slots, len(graph.nodes)


a, b = sys.argv[1], sys.argv[2]
va, pa, sa, na = describe(a)
vb, pb, sb, nb = describe(b)
print(f"A {a}: {len(va)} variables, {na} graph nodes, {len(pa)} object paths, {sa} slot variables")
print(f"B {b}: {len(vb)} variables, {nb} graph nodes, {len(pb)} object paths, {sb} slot variables")
only_a, only_b = sorted(set(va) - set(vb)), sorted(set(vb) - set(va))
diff = sorted(k for k in set(va) & set(vb) if va[k] != vb[k])
print("variables only in A:", len(only_a), only_a[:20])
print("variables only in B:", len(only_b), only_b[:20])
print("shape/dtype differs:", len(diff), [(k, va[k], vb[k]) for k in diff[:20]])
print("object paths only in A:", len(pa - pb), sorted(pa - pb)[:20])
print("object paths only in B:", len(pb - pa), sorted(pb - pa)[:20])
print("IDENTICAL STRUCTURE" if not (only_a or only_b or diff or pa ^ pb or sa != sb) else "STRUCTURE DIFFERS")
