//! Test support: the namespace lab (`lab`), real DNS servers (`dns`), the external programs the
//! tests run (`tools`) and the differential test's generators (`gen`).

pub mod dns;
pub mod r#gen;
pub mod lab;
pub mod tools;
