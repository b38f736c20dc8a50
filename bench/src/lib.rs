//! Benchmarks for molt: each binary in `src/bin` spawns the real release binary and prints
//! its figures.
