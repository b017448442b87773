"""idlink benchmarks: every figure beside a floor measured in the same run."""
