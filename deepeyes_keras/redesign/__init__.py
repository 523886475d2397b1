"""From findings to a smaller network: the proposal (no TensorFlow) and its verification."""
