"""Everything that builds psml's model zoo: data, architectures, training, ONNX export, profiles, manifest."""
