//! Test support: the namespace lab (`lab`) and the differential test's generators (`gen`).

pub mod r#gen;
pub mod lab;
