//! Benchmarks of freshet live in `benches/`; see `benches/README.md`.
