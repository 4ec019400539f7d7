//! The lab (Cargo feature `lab`, on by default): a throwaway PostgreSQL cluster, synthetic
//! spans, `demo` and `bench`. The product binary builds without it
//! (`cargo build --release --no-default-features`).

pub mod bench;
pub mod cluster;
pub mod demo;
pub mod spangen;
