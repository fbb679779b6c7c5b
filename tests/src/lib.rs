//! Test support: the namespace lab (`lab`), the differential test's generators (`gen`) and its
//! reader of a loaded program's counters and DNS copies (`probe`).

pub mod r#gen;
pub mod lab;
pub mod probe;
